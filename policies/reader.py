"""Reading TOML strictly: every key type-checked, unknown keys refused, every error naming the
file, the line and the key (:class:`ConfigError`).

:class:`TomlReader` reads the policy file (:mod:`policies.loader`) and the gateway's own
configuration file alike.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

__all__ = ["ConfigError", "TomlReader"]


class ConfigError(ValueError):
    """A configuration or policy file is invalid; the message names file, line and key."""

    def __init__(self, source: str, key: str, problem: str, line: int | None = None) -> None:
        self.source, self.key, self.problem, self.line = source, key, problem, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _locate(text: str, path: list[str | int]) -> int | None:
    """Best-effort line number of ``path`` (e.g. ``["rules", 1, "mode"]``) in TOML ``text``."""
    *table, last = path
    header: list[str | int] = []
    counts: dict[str, int] = {}
    table_line: int | None = None  # where the key's table starts: the answer if the key is absent
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        m = header_re.match(line)
        if m:
            names: list[str | int] = [p.strip().strip('"') for p in m.group(2).split(".")]
            if m.group(1) == "[[":
                key = ".".join(str(n) for n in names)
                counts[key] = counts.get(key, -1) + 1
                names.append(counts[key])
            header = names
            if header == path:
                return number
            if header == table:
                table_line = number
            continue
        if (
            header == table
            and isinstance(last, str)
            and re.match(rf'^\s*"?{re.escape(last)}"?\s*=', line)
        ):
            return number
    return table_line if table else None


class TomlReader:
    """Reads one TOML table, type-checking each key and refusing keys nobody asked for."""

    def __init__(
        self, data: Mapping[str, Any], source: str, text: str, path: list[str | int] | None = None
    ) -> None:
        self.data, self.source, self.text = data, source, text
        self.path: list[str | int] = path or []
        self._seen: set[str] = set()

    @classmethod
    def from_text(cls, text: str, source: str) -> TomlReader:
        """Parse TOML text; a syntax error becomes a :class:`ConfigError` with its line."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # Python 3.11's TOMLDecodeError has no lineno attribute; its message has the line.
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise ConfigError(source, "", f"not valid TOML: {exc}", line) from exc
        return cls(data, source, text)

    def _name(self, key: str | int | None = None) -> str:
        parts = [*self.path, key] if key is not None else self.path
        out = ""
        for p in parts:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out

    def error(self, key: str | int | None, problem: str) -> ConfigError:
        """A :class:`ConfigError` for ``key`` in this table, with its line when it can be found."""
        path = [*self.path, key] if key is not None else self.path
        return ConfigError(self.source, self._name(key), problem, _locate(self.text, path))

    def has(self, key: str) -> bool:
        """True when ``key`` is present."""
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, what: str) -> Any:
        """The value of ``key`` if it is of ``kind`` (described as ``what``), else ``default``."""
        self._seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"must be {what}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {what}, got {value!r}")
        return value

    def string(self, key: str, default: str = "") -> str:
        """A string value."""
        value: str = self.get(key, str, default, "a string")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A string that must be one of ``choices``."""
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        """An integer value not below ``minimum``."""
        value: int = self.get(key, int, default, "an integer")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        """A number (integer or float) not below ``minimum``."""
        value = float(self.get(key, (int, float), default, "a number"))
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean value."""
        value: bool = self.get(key, bool, default, "true or false")
        return value

    def strings(self, key: str, default: list[str] | None = None) -> list[str]:
        """A list of strings."""
        value = self.get(key, list, list(default or []), "a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(key, f"item {i + 1} must be a string, got {item!r}")
        return list(value)

    def date(self, key: str) -> date | None:
        """A TOML local date (``2027-01-01``), or None when absent."""
        value = self.get(key, date, None, "a date such as 2027-01-01")
        if isinstance(value, datetime):
            raise self.error(key, f"must be a date such as 2027-01-01, got {value!r}")
        return value  # type: ignore[no-any-return]

    def table(self, key: str) -> TomlReader:
        """A sub-table (empty when absent)."""
        value = self.get(key, dict, {}, "a table")
        return TomlReader(value, self.source, self.text, [*self.path, key])

    def tables(self, key: str) -> list[TomlReader]:
        """An array of tables (``[[key]]``)."""
        value = self.get(key, list, [], "an array of tables ([[...]])")
        readers = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(key, f"item {i + 1} must be a table")
            readers.append(TomlReader(item, self.source, self.text, [*self.path, key, i]))
        return readers

    def unread(self) -> list[str]:
        """Keys present but not read so far."""
        return [k for k in self.data if k not in self._seen]

    def finish(self) -> None:
        """Refuse any key that was not read: unknown keys are errors."""
        for key in self.unread():
            raise self.error(key, "unknown key")
