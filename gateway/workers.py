"""Several gateway processes on one port, under a supervisor (``[server] workers``).

One Python process uses one core; the district's server has more. With ``workers = N`` (or
``"auto"``: one per core) ``congvu serve`` becomes a small supervisor that starts N worker
processes, each a complete gateway listening on the same address with ``SO_REUSEPORT``, so the
kernel spreads new connections across them. The supervisor itself handles no mail; it

- restarts a worker that dies (after a pause that grows while they keep dying), loudly logged;
  connections that worker held are cut, but none was told 250 for mail the downstream lacks;
- passes SIGHUP on (each worker reloads the policy and trust store, or keeps the old ones);
- on SIGTERM or SIGINT passes SIGTERM on and waits for every worker to drain and exit;
- serves ``/metrics`` (every worker's counters, summed through prometheus-client's
  multiprocess mode) and ``/health`` (``ok`` while all workers run).

Each worker writes its own hash chain in the decision store (instance ``HOSTNAME/wN``) and has
its own validation pool, DNS cache and notice rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from gateway.config import GatewayConfig
from gateway.logs import get_logger
from gateway.metrics import serve_http
from gateway.relay import DownstreamWatch
from policies import ConfigError, load_policy

__all__ = ["Supervisor", "hold_stop_signals", "take_stop_signals"]

_RESTART_PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before restarts, for crash loops
_STABLE_AFTER = 60.0  # a worker that lived this long resets the restart pause
_EXIT_USAGE = 2  # a worker's exit status when it cannot start (see gateway.cli)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stopping: list[int] = []  # stop signals that came before the event loop took them


def hold_stop_signals() -> None:
    """From now until the event loop takes them (:func:`gateway.server.serve`, the
    supervisor), SIGTERM and SIGINT are remembered instead of ending the process. ``congvu
    serve`` binds its ports before the store and the validation pool: a stop in between
    (systemd stopping a unit that is still starting) then becomes a clean stop, not death by
    the signal (exit -15)."""
    for number in _STOP_SIGNALS:
        signal.signal(number, lambda signum, _frame: _stopping.append(signum))


def take_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Let ``loop`` set ``stop`` on SIGTERM and SIGINT, and set it now if one came already."""
    for number in _STOP_SIGNALS:
        loop.add_signal_handler(number, stop.set)
    if _stopping:
        stop.set()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # consecutive early deaths
    restart_at: float = 0.0
    restarted: bool = False  # False until its first restart: exit 2 then means "cannot start"


@dataclass
class Supervisor:
    """Starts, watches and stops the worker processes; serves their metrics and health."""

    config: GatewayConfig
    config_file: Path | None
    policy_sha256: str = ""
    workers: list[_Worker] = field(default_factory=list)
    restarts: int = 0
    failed: bool = False  # a worker could not start: the supervisor stops, exit status 2
    http_listener: socket.socket | None = None  # /metrics and /health, bound by the caller
    command: str = "serve"  # what each worker runs: serve, or milter
    options: tuple[str, ...] = ()  # and with which options (milter's --listen)

    def __post_init__(self) -> None:
        self.log = get_logger()
        self.downstream = DownstreamWatch(self.config.downstream)
        self._metrics_dir = tempfile.mkdtemp(prefix="congvu-metrics-")
        self._stopping = False
        self.workers = [_Worker(i + 1) for i in range(self.config.workers)]

    def _spawn(self, worker: _Worker) -> None:
        command = [sys.executable, "-m", "gateway.cli", self.command, *self.options]
        command += ["--worker", str(worker.index)]
        if self.config_file is not None:
            command += ["--config", str(self.config_file)]
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self._metrics_dir)
        worker.process = subprocess.Popen(command, env=env)  # noqa: S603 - our own command
        worker.started = time.monotonic()
        self.log.info("worker.started", worker=worker.index, pid=worker.process.pid)

    def _reap(self) -> None:
        """Notice dead workers; schedule their restart with a growing pause."""
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            multiprocess.mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
            worker.process = None
            if process.returncode == _EXIT_USAGE and not worker.restarted:
                # It could not start at all (port taken, bad configuration): restarting cannot
                # help. After a crash, a failed restart (store briefly away) is retried.
                self.log.error("worker.cannot_start", worker=worker.index, pid=process.pid)
                self.failed = True
                continue
            if now - worker.started > _STABLE_AFTER:
                worker.failures = 0
            pause = _RESTART_PAUSES[min(worker.failures, len(_RESTART_PAUSES) - 1)]
            worker.failures += 1
            worker.restart_at = now + pause
            self.log.error(
                "worker.died",
                worker=worker.index,
                pid=process.pid,
                returncode=process.returncode,
                restart_in=pause,
            )

    def _signal_all(self, signum: int, *, except_for: _Worker | None = None) -> None:
        for worker in self.workers:
            process = worker.process
            if worker is not except_for and process is not None and process.poll() is None:
                process.send_signal(signum)

    def reload(self, *, except_for: _Worker | None = None) -> None:
        """SIGHUP: each worker re-reads (and validates) the policy itself; /health shows the
        policy on disk if it is valid (each worker logs whether it took it)."""
        self.log.info("supervisor.reload", workers=len(self.workers))
        with contextlib.suppress(ConfigError):
            self.policy_sha256 = load_policy(self.config.policy_file).sha256
        self._signal_all(signal.SIGHUP, except_for=except_for)

    def health(self) -> dict[str, Any]:
        """``ok`` while every worker runs and the downstream answers; ``degraded`` otherwise;
        the policy is each worker's own (see their logs)."""
        alive = sum(1 for w in self.workers if w.process is not None and w.process.poll() is None)
        healthy = alive == len(self.workers) and self.downstream.problem is None
        status = "ok" if healthy else "degraded"
        if self._stopping:
            status = "stopping"
        return {
            "status": status,
            "downstream": self.downstream.health(),
            "workers": len(self.workers),
            "workers_alive": alive,
            "restarts": self.restarts,
            "policy_sha256": self.policy_sha256,
        }

    def exposition(self) -> bytes:
        """Every worker's metrics, summed (prometheus-client multiprocess mode)."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))

    async def run(self, grace: float) -> int:
        """Until SIGTERM/SIGINT: keep the workers running. Then stop them and wait.

        Returns the exit status: 0, or 2 if a worker could not start.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        take_stop_signals(loop, stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        http = None
        if self.config.metrics_listen:
            host, _, port = self.config.metrics_listen.rpartition(":")
            http = await serve_http(
                host.strip("[]"), int(port), self.exposition, self.health, sock=self.http_listener
            )
        watch = asyncio.create_task(self.downstream.run())
        for worker in self.workers:
            self._spawn(worker)
        self.log.info(
            "supervisor.started",
            workers=len(self.workers),
            listen=f"{self.config.listen_host}:{self.config.listen_port}",
        )
        try:
            while not stop.is_set() and not self.failed:
                self._reap()
                now = time.monotonic()
                for worker in self.workers:
                    if worker.process is None and now >= worker.restart_at:
                        self.restarts += 1
                        worker.restarted = True
                        self._spawn(worker)
                        # The new worker reads the policy on disk now: the others re-read it
                        # too, so that all judge alike (the new one is not signalled: its
                        # handler may not be installed yet).
                        self.reload(except_for=worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            self._stopping = True
            watch.cancel()
            self._signal_all(signal.SIGTERM)
            deadline = time.monotonic() + grace + 10
            for worker in self.workers:
                process = worker.process
                if process is None:
                    continue
                left = max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.to_thread(process.wait, left)
                except subprocess.TimeoutExpired:
                    self.log.error("worker.killed", worker=worker.index, pid=process.pid)
                    process.kill()
                    process.wait()
            if http is not None:
                http.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self.log.info("supervisor.stopped")
        return _EXIT_USAGE if self.failed else 0
