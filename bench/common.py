"""What the two benchmark scripts share (bench/run.py, bench/chain.py): loading a test helper
by its path, free ports, waiting for a listener, and the CPU of a process tree from /proc."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path
from types import ModuleType

__all__ = ["cpu_seconds", "free_port", "load_by_path", "process_tree", "wait_listening"]


def load_by_path(name: str, path: Path) -> ModuleType:
    """A module of tests/support/ (the test PKI, the DNS server, the private Postfix), without
    putting tests/ on sys.path (tests/policies would shadow the policies package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on loopback nothing listens on (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 30, step: float = 0.05) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; RuntimeError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(step)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU of ``pid`` and its living descendants; with ``reaped``, also of the
    children they have reaped (cutime, cstime): Postfix's master replaces an ``smtpd`` after
    100 sessions, and the CPU of the one that exited would otherwise drop out of the count."""
    tick = os.sysconf("SC_CLK_TCK")
    last = 15 if reaped else 13  # /proc/PID/stat fields 14-15 (utime, stime), 16-17 (c...)
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:last])
    return total / tick
