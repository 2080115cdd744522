"""The PostgreSQL on this machine for the tests (127.0.0.1:5432, trust auth, database
``test``): a fresh schema per test, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

__all__ = ["PG_BASE", "fresh_schema"]

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose connections work in a new, empty schema. No server: the test is skipped,
    or failed where ``CONGVU_REQUIRE_POSTGRES`` is set (CI must not pass by skipping)."""
    import psycopg

    schema = f"congvu_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CONGVU_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
