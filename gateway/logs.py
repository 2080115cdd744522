"""Structured logging: one JSON object a line (structlog), to stdout or a file.

Events are named ``area.what`` (``policy.decision``, ``relay.failed``, ``smtp.exception``);
the decision record itself is logged as the ``policy.decision`` event, so a log shipper gets
every decision even without access to the store.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

__all__ = ["RawJSON", "configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _SafeLogger:
    """Writes one line per event; a failing log stream never fails mail handling.

    A full disk or a closed log file must not turn into SMTP errors: decisions are in the
    store as well. The line goes to the process's original stderr instead.
    """

    def __init__(self, stream: IO[str] | int) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        try:
            if isinstance(self._stream, int):
                # One write(2) on an O_APPEND file: the gateway's worker processes share the
                # file, and each line lands whole, never interleaved with another's.
                os.write(self._stream, (message + "\n").encode("utf-8", "surrogateescape"))
                return
            with self._lock:
                self._stream.write(message + "\n")
                self._stream.flush()
        except (OSError, ValueError):
            try:
                if sys.__stderr__ is not None:
                    sys.__stderr__.write(message + "\n")
            except (OSError, ValueError):
                pass

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class RawJSON(str):
    """A value that is JSON text already (a decision record, serialized once for the store):
    the log line embeds it as it is instead of serializing the record a second time."""

    __slots__ = ()


def _render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
    """One JSON object; :class:`RawJSON` values are spliced in at the end, unparsed."""
    raw = {key: event.pop(key) for key in [k for k, v in event.items() if isinstance(v, RawJSON)]}
    line = json.dumps(event, ensure_ascii=False, default=str)
    if not raw:
        return line
    spliced = "".join(f", {json.dumps(key)}: {value}" for key, value in raw.items())
    return line[:-1] + spliced + "}" if event else "{" + spliced[2:] + "}"


class _SafeLoggerFactory:
    def __init__(self, stream: IO[str] | int) -> None:
        self._logger = _SafeLogger(stream)

    def __call__(self, *args: Any) -> _SafeLogger:
        return self._logger


def configure_logging(level: str = "info", file: str = "-") -> None:
    """Send JSON lines at ``level`` and above to ``file`` ("-" is standard output)."""
    stream: IO[str] | int = (
        sys.stdout if file == "-" else os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_SafeLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every session at INFO through the standard library ("mail.log"), in the
    # same stream.
    logging.basicConfig(
        stream=open(stream, "a", encoding="utf-8", closefd=False)  # noqa: SIM115
        if isinstance(stream, int)
        else stream,
        level=logging.WARNING,
        format="%(name)s %(message)s",
    )
    # Its per-command warnings ("unrecognised: X") are not JSON and a client can make
    # thousands: errors only. The gateway's own events say what matters, structured.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def get_logger(**context: Any) -> Any:
    """A structlog logger bound to ``context``."""
    return structlog.get_logger("congvu").bind(**context)
