"""docs/reference/configuration.md against the code: every key the gateway reads is listed,
no other, and a default shown as a TOML value is what the gateway uses without the key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, load_config
from policies.reader import TomlReader

PAGE = Path(__file__).parents[2] / "docs" / "reference" / "configuration.md"
# [notices] keys other than url are read only when url is given.
NOTICES = '[notices]\nurl = "smtp://127.0.0.1:25"\n'


def documented() -> dict[tuple[str, str], str]:
    """(table, key) -> the default cell, from each "### `[table]`" heading's table."""
    rows: dict[tuple[str, str], str] = {}
    table = ""
    for line in PAGE.read_text("utf-8").splitlines():
        if heading := re.match(r"^### `\[(\w+)\]`", line):
            table = heading.group(1)
        elif table and (row := re.match(r"^\| `(\w+)` \| (.*?) \| .*\|$", line)):
            rows[(table, row.group(1))] = row.group(2)
    return rows


def keys_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """The (table, key) pairs load_config asks its TOML reader for."""
    asked: set[tuple[str, str]] = set()
    original = TomlReader.get

    def recording(self: TomlReader, key: str, *args: Any) -> Any:
        if len(self.path) == 1:
            asked.add((str(self.path[0]), key))
        return original(self, key, *args)

    monkeypatch.setattr(TomlReader, "get", recording)
    path = tmp_path / "all.toml"
    path.write_text(NOTICES, "utf-8")
    load_config(path)
    return asked


def normalized(config: GatewayConfig) -> dict[str, Any]:
    """The configuration as a dict, paths made absolute (the working directory is the file's
    folder, as the page says: defaults are relative to it, set paths to the file)."""

    def fix(value: Any) -> Any:
        if isinstance(value, Path):
            return value.resolve()
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return fix(dataclasses.asdict(dataclasses.replace(config, source="")))


def test_every_key_the_gateway_reads_is_documented_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(documented()) == keys_read(tmp_path, monkeypatch)


def test_documented_defaults_are_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    checked = 0
    for (table, key), cell in documented().items():
        literal = re.match(r"^`([^`]+)`", cell)
        if literal is None:
            continue  # prose: "none", "the machine's FQDN", "[server] hostname"
        try:
            tomllib.loads(f"x = {literal.group(1)}")
        except tomllib.TOMLDecodeError:
            continue
        prefix = NOTICES if table == "notices" else ""
        bare, explicit = tmp_path / "bare.toml", tmp_path / "explicit.toml"
        bare.write_text(prefix, "utf-8")
        setting = f"{key} = {literal.group(1)}\n"
        explicit.write_text(
            prefix + setting if table == "notices" else f"{prefix}[{table}]\n{setting}", "utf-8"
        )
        assert normalized(load_config(explicit)) == normalized(load_config(bare)), (table, key)
        checked += 1
    assert checked >= 25  # most defaults are literal values
