"""What a fresh clone gets: no environment, no build output, no link out of the repository;
a short README whose two commands are the ones CI runs; a docs site that builds strictly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Virtual environments, caches, build and site output: made on the user's machine, never shipped.
BUILD_OUTPUT = re.compile(
    r"(^|/)(\.?venv|env|__pycache__|[^/]*\.egg-info|build|dist|site|node_modules|"
    r"\.mypy_cache|\.ruff_cache|\.pytest_cache|\.hypothesis)(/|$)|\.py[co]$"
)


def tracked() -> list[tuple[str, str]]:
    """(mode, path) of every file git tracks."""
    out = subprocess.run(
        ["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    entries = []
    for entry in filter(None, out.split("\0")):
        meta, _, path = entry.partition("\t")
        entries.append((meta.split()[0], path))
    return entries


def test_no_tracked_link_points_outside_the_repository() -> None:
    for mode, path in tracked():
        if mode == "120000":
            target = (ROOT / path).parent / os.readlink(ROOT / path)
            assert target.resolve().is_relative_to(ROOT), f"{path} -> {os.readlink(ROOT / path)}"


def test_no_environment_or_build_output_is_tracked() -> None:
    offending = [path for _, path in tracked() if BUILD_OUTPUT.search(path)]
    assert offending == []


def readme_command(marker: str) -> str:
    """The command in the fenced block after ``<!-- marker -->`` in README.md."""
    text = (ROOT / "README.md").read_text("utf-8")
    found = re.search(rf"<!-- {marker} -->\n```\w*\n(.+?)\n```", text, re.DOTALL)
    assert found, f"README.md has no block marked {marker}"
    return found.group(1)


def test_readme_is_short_and_has_the_two_commands() -> None:
    assert len((ROOT / "README.md").read_text("utf-8").splitlines()) <= 250
    assert "congvu serve" in readme_command("run-command")
    assert "scripts/test.sh" in readme_command("test-command")


def test_ci_runs_the_readme_commands_as_written() -> None:
    """.ci/run takes both commands from README.md (so they cannot drift) and runs them in a
    fresh clone, deleting nothing first."""
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "run-command" in ci and "test-command" in ci
    assert "git clone" in ci
    assert "rm -rf" not in ci.split("git clone", 1)[0]


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    """MkDocs with warnings as errors: every page in the nav, every link and anchor found."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "index.html").exists()
