"""The runner of the docs' console sessions: what it accepts as matching output, how it reads
a session, and that it leaves nothing running."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.docshell import Shell, match_output, parse_session


def test_ellipsis_stands_for_any_text_within_and_across_lines() -> None:
    assert match_output("250 2.0.0 Ok: accepted as ...", "250 2.0.0 Ok: accepted as 01M9")
    assert match_output("first\n...\nlast", "first\nsecond\nthird\nlast\n")
    assert match_output("a  \n", "a")  # trailing spaces and blank lines do not count
    assert not match_output("250 ...", "550 5.7.1 refused")
    assert not match_output("exit status 0", "exit status 0\nmore")


def test_a_session_is_commands_with_their_output() -> None:
    steps = parse_session("$ echo a \\\n  b\na b\n$ printf 'x\\n'\n> \nx\n$ true\n", 10)
    assert [(s.command, s.expected, s.line) for s in steps] == [
        ("echo a \\\n  b", "a b", 10),
        ("printf 'x\\n'\n", "x", 13),
        ("true", "", 16),
    ]
    with pytest.raises(ValueError, match="output before any command"):
        parse_session("orphan output\n$ true\n")


def test_a_page_shares_one_shell_and_leaves_nothing_running(tmp_path: Path) -> None:
    shell = Shell(tmp_path, {"PATH": os.environ["PATH"]})
    assert shell.run("cd /tmp && X=1") == ("", 0)
    assert shell.run("pwd; echo $X") == ("/tmp\n1\n", 0)
    assert shell.run("false") == ("", 1)
    output, _ = shell.run("sleep 300 & echo $!")
    background = int(output)
    shell.close()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{background}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{background}")


def test_a_command_that_hangs_ends_the_page_at_once(tmp_path: Path) -> None:
    shell = Shell(tmp_path, {"PATH": os.environ["PATH"]})
    with pytest.raises(TimeoutError):
        shell.run("sleep 300", timeout=0.5)
    with pytest.raises(RuntimeError, match="an earlier command did not finish"):
        shell.run("echo next")
