"""Collects the documentation as tests: README.md and docs/ (see tests/support/docshell.py)."""

from sybil import Sybil

from tests.support.docshell import ConsoleParser, FileParser, setup, teardown

pytest_collect_file = Sybil(
    parsers=[FileParser(), ConsoleParser()],
    patterns=["README.md", "*.md"],
    setup=setup,
    teardown=teardown,
).pytest()
