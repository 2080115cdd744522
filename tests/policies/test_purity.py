"""``policies`` is pure: importing it loads no mechanism."""

from __future__ import annotations

import subprocess
import sys


def test_importing_policies_loads_neither_gateway_nor_network_libraries() -> None:
    """A fresh interpreter importing every policies module has no gateway, aiosmtpd or dns."""
    code = (
        "import sys, pkgutil, importlib, policies\n"
        "for m in pkgutil.walk_packages(policies.__path__, 'policies.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'gateway', 'aiosmtpd', 'aiosmtplib', 'dns', 'asyncio', 'socket', 'structlog'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def policies_imports() -> dict[str, set[str]]:
    """Which policies modules each policies module imports (at the top or inside a function):
    ``from policies.rules import sender`` is the module policies.rules.sender."""
    import ast
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parents[2] / "policies"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("policies"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("policies"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    is_module = importlib.util.find_spec(node.module).submodule_search_locations
                    edges.add(child if is_module and child in _modules(root) else node.module)
    return graph


def _modules(root) -> set[str]:  # type: ignore[no-untyped-def]
    return {".".join(p.relative_to(root.parent).with_suffix("").parts) for p in root.rglob("*.py")}


def test_policies_has_no_import_circle() -> None:
    """Each module can be read (and imported) after the ones it uses: no module reaches itself
    through its imports (the policy's types, its loader, the rules and the notices used to)."""
    graph = policies_imports()
    assert "policies.schema" in graph["policies.rules.sender"]  # the graph is real

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    circles = sorted(name for name in graph if name != "policies" and reaches(name, name, set()))
    assert circles == []


def _uses(kind: str, name: str) -> set[str]:
    """The modules of gateway/ and policies/ that read the attribute (``kind="attr"``) or call
    the function (``kind="call"``) ``name``."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2]
    found = set()
    for path in [*root.joinpath("gateway").rglob("*.py"), *root.joinpath("policies").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            hit = (kind == "attr" and isinstance(node, ast.Attribute) and node.attr == name) or (
                kind == "call"
                and isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == name
            )
            if hit:
                found.add(path.relative_to(root).as_posix())
    return found


def test_each_decision_is_made_in_one_place() -> None:
    """What the policy says about an unknown revocation status is applied by the document rule
    alone (``congvu policy explain`` only shows it); DKIM alignment is computed only in
    policies/identity.py; signature problems are ranked only through problem_rank, whose order
    the signature checks and the document rule share."""
    assert _uses("attr", "unknown_revocation") == {
        "policies/rules/documents.py",
        "policies/explain.py",
    }
    assert _uses("call", "organisational_domain") == {"policies/identity.py"}
    assert _uses("call", "aligned") == {"policies/identity.py", "policies/rules/sender.py"}
    assert _uses("call", "problem_rank") == {
        "gateway/checks/signatures.py",
        "policies/rules/documents.py",
    }
