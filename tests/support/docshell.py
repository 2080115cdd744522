"""Run the documentation: every shell session and every file shown in the Markdown.

The docs show commands the way a reader types them, in fenced ``console`` blocks::

    ```console
    $ congvu --version
    congvu 0.1.0
    ```

Each such block is a test (collected by Sybil through the pytest plugin
``tests/support/docplugin.py``). The commands of one page run in order in **one** bash
process, started in a fresh folder that holds a copy of the repository's ``examples/``,
``deploy/`` and ``certs/`` (as a reader's clone does), so ``cd``, variables and background
jobs carry from block to block as they would for the reader; at the end of the page the whole
process group is stopped. What a command prints (standard output and error together) must
match the lines shown under it:

- ``...`` stands for any text (ids, times, sizes), within a line or over several lines;
- trailing spaces and a final blank line do not count;
- a command shown without output must succeed (exit status 0) and print nothing.

A line starting ``$ `` is a command; a line starting ``> `` continues it, as does any line after
one that ends with a backslash. Files a page asks the reader to create are shown in a fenced
block right after an ``<!-- file: NAME -->`` comment; the test writes them before the commands
below them run, so the reader's file and the tested file are the same text.

Commands that cannot run here (``systemctl``, ``docker``, ``apt-get`` on the reader's server)
are shown in ``sh`` blocks without output; those are not run.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region

__all__ = ["ConsoleParser", "FileParser", "Shell", "match_output", "setup", "teardown"]

_REPO = Path(__file__).resolve().parents[2]
_COPIED = ("examples", "deploy", "certs")  # what a page may use from the reader's clone
COMMAND_TIMEOUT = 120.0  # seconds one command may take (a first `pip install` needs a while)

_FENCE = (
    r"(?P<indent>[ ]*)(?P<fence>```+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ ]*$"
)
_CONSOLE = re.compile(r"^" + _FENCE, re.MULTILINE | re.DOTALL)
_FILE = re.compile(
    r"^[ ]*<!--\s*file:\s*(?P<name>\S+)\s*-->[ ]*\n(?:[ ]*\n)*" + _FENCE,
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Step:
    """One command of a console block and the output shown under it."""

    command: str
    expected: str
    line: int  # line of the ``$`` in the Markdown file


def _dedent(body: str, indent: str) -> str:
    return "".join(line.removeprefix(indent) for line in body.splitlines(keepends=True))


def parse_session(text: str, first_line: int = 1) -> list[Step]:
    """Split a console block into commands and their expected output."""
    steps: list[Step] = []
    command: list[str] = []
    output: list[str] = []
    start = first_line
    continued = False

    def flush() -> None:
        if command:
            steps.append(Step("\n".join(command), "\n".join(output), start))

    for number, line in enumerate(text.splitlines(), start=first_line):
        if line.startswith("$ ") or line == "$":
            flush()
            command, output, start = [line[2:]], [], number
            continued = line.endswith("\\")
        elif command and not output and (continued or line.startswith("> ")):
            command.append(line if continued else line[2:])
            continued = line.endswith("\\")
        elif command:
            output.append(line)
            continued = False
        elif line.strip():
            raise ValueError(f"line {number}: output before any command: {line!r}")
    flush()
    return steps


def match_output(expected: str, actual: str) -> bool:
    """True when ``actual`` is what ``expected`` shows, ``...`` standing for any text."""

    def clean(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())

    pattern = ".*?".join(re.escape(part) for part in clean(expected).split("..."))
    return re.fullmatch(pattern, clean(actual), re.DOTALL) is not None


_LIVE: set[Shell] = set()  # shells not closed yet: stopped at exit if pytest is interrupted


@atexit.register
def _close_all() -> None:
    for shell in list(_LIVE):
        shell.close()


class Shell:
    """One bash process that runs a page's commands in order, in its own folder."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole at the end
        )
        _LIVE.add(self)

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[str, int]:
        """Run ``command``; return what it printed and its exit status."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.process.poll() is not None:
            raise RuntimeError("the page's shell has ended: an earlier command did not finish")
        marker = f"__docshell_{uuid.uuid4().hex}__"
        # The command reads no standard input (a reader's keyboard would be idle too).
        script = f"{command}\n__status=$?\nprintf '\\n{marker} %d\\n' \"$__status\"\n"
        self.process.stdin.write(script.encode())
        self.process.stdin.flush()
        received = b""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        end = re.compile(rb"\n" + marker.encode() + rb" (\d+)\n")
        while (found := end.search(received)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()  # the rest of the page cannot run after a command that hangs
                raise TimeoutError(f"no end after {timeout:.0f} s; printed so far:\n{received!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the shell ended; printed:\n{received.decode()}")
                received += chunk
        return received[: found.start()].decode("utf-8", "replace"), int(found.group(1))

    def close(self) -> None:
        """Stop the shell and everything it started (background gateways included)."""
        _LIVE.discard(self)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=40)  # a gateway drains for up to 30 s
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()


def _shell(namespace: dict[str, Any]) -> Shell:
    shell = namespace.get("shell")
    if shell is None:
        folder = Path(tempfile.mkdtemp(prefix="congvu-docs-"))
        bin_dir = str(Path(sys.executable).parent)  # the test environment's congvu
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CONGVU_", "PYTEST_")) and key != "VIRTUAL_ENV"
        }
        env.update(PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", LC_ALL="C.UTF-8")
        for name in _COPIED:
            shutil.copytree(_REPO / name, folder / name)
        shell = namespace["shell"] = Shell(folder, env)
    assert isinstance(shell, Shell)
    return shell


def setup(namespace: dict[str, Any]) -> None:
    """Sybil's per-page set-up: the shell starts with the page's first block."""
    namespace["shell"] = None


def teardown(namespace: dict[str, Any]) -> None:
    """Sybil's per-page tear-down: stop the shell and its jobs, remove the folder."""
    shell = namespace.get("shell")
    if isinstance(shell, Shell):
        shell.close()
        shutil.rmtree(shell.folder, ignore_errors=True)


def _evaluate_session(example: Example) -> str | None:
    shell = _shell(example.namespace)
    for step in example.parsed:
        output, status = shell.run(step.command)
        where = f"{example.path}:{step.line}: $ {step.command}"
        if not step.expected.strip() and status != 0:
            return f"{where}\nexited {status}; printed:\n{output}"
        if not match_output(step.expected, output):
            return f"{where}\nexpected:\n{step.expected}\ngot (exit {status}):\n{output}"
    return None


def _evaluate_file(example: Example) -> str | None:
    name, content = example.parsed
    target = _shell(example.namespace).folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    return None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


class ConsoleParser:
    """Finds the ``console`` blocks of a Markdown page."""

    def __call__(self, document: Document) -> Iterator[Region]:
        taken = {m.start("indent") for m in _FILE.finditer(document.text)}
        for m in _CONSOLE.finditer(document.text):
            if m.group("info").strip() != "console" or m.start() in taken:
                continue
            body = _dedent(m.group("body"), m.group("indent"))
            steps = parse_session(body, _line(document.text, m.start("body")))
            yield Region(m.start(), m.end(), steps, _evaluate_session)


class FileParser:
    """Finds the files a page shows after ``<!-- file: NAME -->``."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for m in _FILE.finditer(document.text):
            name = m.group("name")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{document.path}: file {name!r} must be inside the folder")
            body = _dedent(m.group("body"), m.group("indent"))
            yield Region(m.start(), m.end(), (name, body), _evaluate_file)
