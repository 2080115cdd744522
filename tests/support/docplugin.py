"""A pytest plugin (``-p tests.support.docplugin`` in pyproject.toml) that collects the
documentation as tests: every console session and file shown in README.md and docs/ (see
tests/support/docshell.py)."""

from pathlib import Path

from sybil import Sybil

from tests.support.docshell import ConsoleParser, FileParser, setup, teardown

pytest_collect_file = Sybil(
    parsers=[FileParser(), ConsoleParser()],
    path=str(Path(__file__).resolve().parents[2]),  # the repository
    patterns=["README.md", "*.md"],
    setup=setup,
    teardown=teardown,
).pytest()
