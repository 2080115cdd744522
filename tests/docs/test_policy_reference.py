"""docs/reference/policy.md against the code.

- Rules: every rule id in ``policies.rules.RULES`` has its section and its row in the page's
  rule table, each section quotes the rule's description, and every rule id the page names
  exists.
- Keys: every key the page lists in a ``| key | default | meaning |`` (or ``| option | ... |``)
  table under a heading such as "### `[documents]`" (or a rule's heading) is accepted by
  :func:`policies.load_policy`; where the page gives the default as a TOML value, in the cell or
  in a "# The defaults of ..." block, writing the key with it gives the same policy as leaving
  it out.
- Completeness: every key the loader reads is listed on the page. The keys read are recorded
  by wrapping ``TomlReader.get``, through which the loader asks for every key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from policies import ConfigError, Policy, load_policy, parse_policy
from policies.reader import TomlReader
from policies.rules import RULES

REPO = Path(__file__).parents[2]
PAGE = REPO / "docs" / "reference" / "policy.md"

Table = tuple[str, ...]  # ("documents",), ("documents", "classes"), ("rules",); () is the root

# Tables whose keys are the district's own names (document kinds, reason codes), not settings.
FREE_FORM: dict[Table, str] = {
    ("documents", "classes"): 'ban-do = "Bản đồ / map"',
    ("citations",): '"sender.personal_domain" = "Công văn số 12/UBND, mục 1"',
}
# A valid value for the keys whose default is not a TOML value (required keys, "none").
SAMPLES: dict[tuple[Table, str], str] = {
    (("domains",), "official"): '["lamdong.gov.vn"]',
    (("rules",), "id"): '"document-signature-required"',
    (("rules",), "enforce_from"): "2027-01-01",
}
BASE_RULE = "document-signature-required"  # the one [[rules]] entry of the test policies


# --- the page ---------------------------------------------------------------------------


@dataclasses.dataclass
class Section:
    """A heading of the page and the lines under it, up to the next heading."""

    level: int
    title: str
    lines: list[str]

    def text(self) -> str:
        return "\n".join(self.lines)


def sections(text: str) -> list[Section]:
    """The page cut at its headings (``#`` lines inside fenced blocks are not headings)."""
    found = [Section(0, "", [])]
    fence = ""
    for line in text.splitlines():
        if fence:
            fence = "" if line.strip() == fence else fence
        elif m := re.match(r"^\s*(```+)", line):
            fence = m.group(1)
        elif m := re.match(r"^(#{1,6}) (.*)$", line):
            found.append(Section(len(m.group(1)), m.group(2).strip(), []))
            continue
        found[-1].lines.append(line)
    return found


def key_rows(section: Section) -> dict[str, str]:
    """key -> default cell, from the section's ``| key | default | meaning |`` table."""
    rows: dict[str, str] = {}
    inside = False
    for line in section.lines:
        if re.match(r"^\| (key|option) \| default \| meaning \|$", line):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and (row := re.match(r"^\| `(\w+)` \| (.*?) \| ", line)):
            rows[row.group(1)] = row.group(2)
    return rows


def toml_literal(cell: str) -> str | None:
    """The cell's TOML value when the cell is one code span holding one, else None (prose)."""
    m = re.fullmatch(r"`([^`]+)`", cell.strip())
    if m is None:
        return None
    try:
        tomllib.loads(f"x = {m.group(1)}")
    except tomllib.TOMLDecodeError:
        return None
    return m.group(1)


def literal(value: Any) -> str:
    """``value`` written as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_blocks(text: str) -> Iterator[str]:
    """The bodies of the page's ```toml blocks."""
    for m in re.finditer(r"^```toml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        yield m.group(1)


@dataclasses.dataclass
class Page:
    """What the page documents."""

    keys: dict[Table, dict[str, str]]  # table -> key -> default cell (tables and sub-tables)
    headings: set[Table]  # every "### `[table]`" heading
    rules: dict[str, Section]  # rule id -> its section
    options: dict[str, dict[str, str]]  # rule id -> option -> default cell
    rule_rows: set[str]  # rule ids in the first column of the rule table
    written: dict[tuple[Table, str], str]  # defaults written out in "# The defaults" blocks
    text: str

    def default(self, table: Table, key: str, cell: str) -> str | None:
        """The documented default of ``key`` as a TOML value, or None when not given as one."""
        return toml_literal(cell) or self.written.get((table, key))


def read_page() -> Page:
    text = PAGE.read_text("utf-8")
    keys: dict[Table, dict[str, str]] = {(): {}}
    headings: set[Table] = set()
    rules: dict[str, Section] = {}
    options: dict[str, dict[str, str]] = {}
    rule_rows: set[str] = set()
    in_rules = False
    for section in sections(text):
        if section.level == 2:
            in_rules = section.title == "The rules"
            if in_rules:
                rule_rows = set(re.findall(r"^\| \[?`([a-z-]+)`", section.text(), re.MULTILINE))
        if table := re.match(r"^`\[\[?([a-z_]+(?:\.[a-z_]+)*)\]\]?`", section.title):
            path = tuple(table.group(1).split("."))
            headings.add(path)
            keys.setdefault(path[:-1], {})[path[-1]] = "(a table)"
            keys.setdefault(path, {}).update(key_rows(section))
        elif in_rules and (rule := re.fullmatch(r"`([a-z]+(?:-[a-z]+)+)`", section.title)):
            rules[rule.group(1)] = section
            options[rule.group(1)] = key_rows(section)
    written: dict[tuple[Table, str], str] = {}
    for body in toml_blocks(text):
        if body.startswith("# The defaults"):
            for name, table_values in tomllib.loads(body).items():
                for key, value in table_values.items():
                    written[((name,), key)] = literal(value)
    return Page(keys, headings, rules, options, rule_rows, written, text)


PAGE_DOC = read_page()


# --- policies for the tests -------------------------------------------------------------


def policy_text(settings: dict[Table, dict[str, str]]) -> str:
    """A minimal valid policy with ``settings`` (table -> key -> TOML value) added."""
    tables: dict[Table, dict[str, str]] = {
        ("domains",): {"official": '["lamdong.gov.vn"]'},
        ("rules",): {"id": json.dumps(BASE_RULE)},
    }
    for table, values in settings.items():
        tables.setdefault(table, {}).update(values)
    lines: list[str] = []
    for table, values in tables.items():
        lines.append("[[rules]]" if table == ("rules",) else f"[{'.'.join(table)}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def load(tmp_path: Path, settings: dict[Table, dict[str, str]]) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(settings), "utf-8")
    return load_policy(path)


def comparable(policy: Policy) -> Policy:
    """The policy without what depends on the file's bytes."""
    return dataclasses.replace(policy, source="", sha256="")


def keys_read(text: str) -> dict[Table, set[str]]:
    """Table -> the keys the loader asks for while reading policy ``text``."""
    asked: dict[Table, set[str]] = {}
    original = TomlReader.get

    def recording(self: TomlReader, key: str, *args: Any, **kwargs: Any) -> Any:
        table = tuple(str(p) for p in self.path if isinstance(p, str))  # [[rules]] index dropped
        asked.setdefault(table, set()).add(key)
        return original(self, key, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TomlReader, "get", recording)
        parse_policy(text, "<test>")
    return asked


# --- rules ------------------------------------------------------------------------------


def test_every_rule_has_its_section_and_its_row() -> None:
    assert set(PAGE_DOC.rules) == set(RULES), "a '### `rule-id`' section under '## The rules'"
    assert PAGE_DOC.rule_rows == set(RULES), "a row in the table under '## The rules'"


def test_every_rule_id_the_page_names_exists() -> None:
    prefixes = "|".join(sorted({rule_id.split("-")[0] for rule_id in RULES}))
    named = set(re.findall(rf"`((?:{prefixes})-[a-z-]+)`", PAGE_DOC.text))
    for body in toml_blocks(PAGE_DOC.text):
        named |= set(re.findall(r'^id = "([^"]*)"', body, re.MULTILINE))
    assert named - set(RULES) == set()


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_each_rule_section_quotes_its_description(rule_id: str) -> None:
    section = PAGE_DOC.rules[rule_id].text()
    quoted = " ".join(line.removeprefix(">").strip() for line in section.splitlines())
    assert " ".join(RULES[rule_id].description.split()) in " ".join(quoted.split())


# --- keys -------------------------------------------------------------------------------


def documented_keys() -> Iterator[tuple[Table, str, str]]:
    """(table, key, default cell) for every setting the page lists, rule options included."""
    for table, rows in PAGE_DOC.keys.items():
        if table and table not in FREE_FORM:
            for key, cell in rows.items():
                yield table, key, cell
    for rule_id, rows in PAGE_DOC.options.items():
        for key, cell in rows.items():
            yield ("rules", rule_id), key, cell


def _id(item: tuple[Table, str, str]) -> str:
    return ".".join((*item[0], item[1]))


@pytest.mark.parametrize("item", list(documented_keys()), ids=_id)
def test_each_documented_key_is_accepted_with_its_default(
    item: tuple[Table, str, str], tmp_path: Path
) -> None:
    table, key, cell = item
    settings: dict[Table, dict[str, str]] = {}
    if table[0] == "rules" and len(table) == 2:  # an option: in the entry of its rule
        rule_id = table[1]
        table, settings = ("rules",), {("rules",): {"id": json.dumps(rule_id)}}
    default = PAGE_DOC.default(table, key, cell)
    value = default or SAMPLES.get((table, key))
    assert value is not None, f"give {_id(item)} a default as a TOML value, or a SAMPLES entry"
    with_key = load(tmp_path, {**settings, table: {**settings.get(table, {}), key: value}})
    if default is not None:
        assert comparable(with_key) == comparable(load(tmp_path, settings)), (
            f"the page says {key} = {default} is the default"
        )


def _table_id(table: Table) -> str:
    return ".".join(table)


@pytest.mark.parametrize("table", sorted(FREE_FORM), ids=_table_id)
def test_free_form_tables_are_documented_and_accepted(table: Table, tmp_path: Path) -> None:
    assert table in PAGE_DOC.headings
    path = tmp_path / "policy.toml"
    path.write_text(policy_text({}) + f"\n[{'.'.join(table)}]\n{FREE_FORM[table]}\n", "utf-8")
    load_policy(path)


def test_samples_are_for_documented_keys_without_a_default() -> None:
    listed = {(table, key): cell for table, key, cell in documented_keys()}
    for table, key in SAMPLES:
        assert (table, key) in listed, f"SAMPLES names {key}, which the page does not list"
        assert PAGE_DOC.default(table, key, listed[(table, key)]) is None


def test_defaults_written_out_are_for_keys_the_tables_list() -> None:
    assert PAGE_DOC.written, "the page has '# The defaults of ...' blocks"
    for table, key in PAGE_DOC.written:
        assert key in PAGE_DOC.keys.get(table, {}), f"[{'.'.join(table)}] {key}: not in a table"


@pytest.mark.parametrize(
    "table", sorted(t for t in PAGE_DOC.keys if t and t not in FREE_FORM), ids=_table_id
)
def test_an_unknown_key_is_refused(table: Table, tmp_path: Path) -> None:
    # Without this, "accepted" above would prove nothing.
    with pytest.raises(ConfigError, match="no_such_key: unknown key"):
        load(tmp_path, {table: {"no_such_key": "1"}})


# --- completeness -----------------------------------------------------------------------


def _merge(into: dict[Table, set[str]], more: dict[Table, set[str]]) -> None:
    for table, keys in more.items():
        into.setdefault(table, set()).update(keys)


def test_every_key_the_loader_reads_is_documented() -> None:
    read: dict[Table, set[str]] = {}
    for source in (REPO / "policies" / "data" / "default.toml", REPO / "examples" / "policy.toml"):
        _merge(read, keys_read(source.read_text("utf-8")))
    _merge(read, keys_read(policy_text({})))
    entry = read.pop(("rules",))  # checked rule by rule below
    for table, keys in sorted(read.items()):
        if table in FREE_FORM:
            continue
        missing = keys - set(PAGE_DOC.keys.get(table, {}))
        assert not missing, f"[{'.'.join(table)}]: the loader reads {sorted(missing)}"
    common = set(PAGE_DOC.keys[("rules",)])
    assert common <= entry
    for rule_id in RULES:
        text = policy_text({("rules",): {"id": json.dumps(rule_id)}})
        keys = keys_read(text)[("rules",)]
        documented = common | set(PAGE_DOC.options[rule_id])
        assert keys == documented, f"[[rules]] id = {rule_id!r}: keys read vs. the page"


def test_the_order_of_signature_problems_is_the_codes() -> None:
    """The policy reference states the one order in which signature problems are reported."""
    import re
    from pathlib import Path

    from policies.model import SIGNATURE_PROBLEMS

    page = (Path(__file__).parents[2] / "docs" / "reference" / "policy.md").read_text("utf-8")
    stated = page.split("in this one order", 1)[1].split(". ", 1)[0]
    assert tuple(re.findall(r"`(\w+)`", stated.split(":", 1)[1])) == SIGNATURE_PROBLEMS
