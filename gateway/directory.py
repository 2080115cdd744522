"""The account directory: who holds which official mailbox, in which unit, since when.

Imported from CSV (``congvu directory import FILE``), validated as a whole (every bad row is
reported with its line number, nothing is changed), then swapped in atomically. Decisions are
attributed to units through it: by the sender's official address, or by a personal address an
officer is known to use ("officer X of unit Y sent an official document from gmail").

CSV columns (header row required; ``personal_addresses`` optional, separated by ``;``)::

    address,full_name,unit,role,issued,personal_addresses
    vanthu@dilinh.lamdong.gov.vn,Văn thư UBND huyện,UBND huyện Di Linh,clerk,2022-01-10,
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from policies.addresses import AddressError, parse_addr_spec

__all__ = ["Account", "DirectoryError", "parse_directory_csv"]

COLUMNS = ("address", "full_name", "unit", "role", "issued", "personal_addresses")
ROLES = ("officer", "clerk")


class DirectoryError(ValueError):
    """The directory file is invalid; ``problems`` lists ``(line, message)`` for every bad row."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source, self.problems = source, problems
        lines = "\n".join(f"  {source}:{line}: {message}" for line, message in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True)
class Account:
    """One official mailbox."""

    address: str  # lower case
    full_name: str
    unit: str
    role: str  # "officer" or "clerk" (văn thư: sends on the unit's behalf)
    issued: date
    personal_addresses: tuple[str, ...] = ()  # lower case


def account_row(a: Account) -> tuple[str, str, str, str, str, str]:
    """An account as a database row (address, name, unit, role, issued, personal JSON)."""
    return (
        a.address,
        a.full_name,
        a.unit,
        a.role,
        a.issued.isoformat(),
        json.dumps(list(a.personal_addresses)),
    )


def account_from_row(row: tuple[Any, ...]) -> Account:
    """The inverse of :func:`account_row`."""
    return Account(
        row[0], row[1], row[2], row[3], date.fromisoformat(row[4]), tuple(json.loads(row[5]))
    )


def _address(value: str) -> str:
    box = parse_addr_spec(value.strip())
    return box.address.lower()


def parse_directory_csv(text: str, source: str) -> list[Account]:
    """Validate the whole file; raise :class:`DirectoryError` listing every bad row."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))  # Excel writes a BOM
    header = tuple(h.strip() for h in reader.fieldnames or ())
    missing = [c for c in COLUMNS[:5] if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        what = []
        if missing:
            what.append(f"missing columns {', '.join(missing)}")
        if unknown:
            what.append(f"unknown columns {', '.join(unknown)}")
        raise DirectoryError(source, [(1, "; ".join(what) + f" (expected {', '.join(COLUMNS)})")])
    accounts: list[Account] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            address = _address(values["address"])
        except AddressError as exc:
            problems.append((line, f"address {values['address']!r}: {exc}"))
            continue
        if address in seen:
            problems.append((line, f"{address} is listed twice (first on line {seen[address]})"))
            continue
        seen[address] = line
        if not values["unit"]:
            problems.append((line, f"{address}: no unit"))
        if values["role"] not in ROLES:
            problems.append(
                (line, f"{address}: role must be officer or clerk, got {values['role']!r}")
            )
        try:
            issued = date.fromisoformat(values["issued"])
        except ValueError:
            problems.append((line, f"{address}: issued must be a date such as 2022-01-10"))
            continue
        personal: list[str] = []
        for item in filter(
            None, (p.strip() for p in values.get("personal_addresses", "").split(";"))
        ):
            try:
                personal.append(_address(item))
            except AddressError as exc:
                problems.append((line, f"{address}: personal address {item!r}: {exc}"))
        accounts.append(
            Account(
                address,
                values["full_name"],
                values["unit"],
                values["role"],
                issued,
                tuple(personal),
            )
        )
    officials = {a.address for a in accounts}
    owners: dict[str, str] = {}
    for account in accounts:
        for personal_address in account.personal_addresses:
            if personal_address in officials:
                problems.append(
                    (
                        seen[account.address],
                        f"{account.address}: personal address "
                        f"{personal_address} is an official account",
                    )
                )
            elif personal_address in owners:
                problems.append(
                    (
                        seen[account.address],
                        f"{account.address}: personal address "
                        f"{personal_address} also belongs to {owners[personal_address]}",
                    )
                )
            owners.setdefault(personal_address, account.address)
    if not accounts and not problems:
        # An empty file would silently wipe the directory (and every unit's score).
        problems.append((1, "no accounts: the file has a header only"))
    if problems:
        raise DirectoryError(source, sorted(problems))
    return accounts
