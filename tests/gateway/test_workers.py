"""`congvu serve` with worker processes (SO_REUSEPORT) under a supervisor, run as an admin runs
it; and SIGKILL of the gateway, which must never have said 250 for mail the downstream lacks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve import events, listening, wait_for

from gateway.store import SqliteStore
from tests.support.gateway import CLERK, OFFICIAL, message
from tests.support.smtp import Downstream, free_port

CONGVU = Path(sys.executable).parent / "congvu"


def write_config(tmp_path: Path, port: int, downstream_port: int, workers: int) -> Path:
    metrics = free_port()
    (tmp_path / "policy.toml").write_text(
        '[domains]\nofficial = ["lamdong.gov.vn"]\n'
        '[[rules]]\nid = "sender-personal-domain"\nmode = "enforce"\n',
        "utf-8",
    )
    path = tmp_path / "congvu.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nhostname = "gw.lamdong.gov.vn"\n'
        f"workers = {workers}\n"
        '[relay]\nlocal_domains = ["lamdong.gov.vn"]\ntrusted_networks = []\n'
        f'[downstream]\nurl = "smtp://127.0.0.1:{downstream_port}"\n'
        '[policy]\nfile = "policy.toml"\n[log]\nfile = "gateway.log"\n'
        '[store]\nsqlite = "decisions.sqlite"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n',
        "utf-8",
    )
    return path


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics_url(config: Path) -> str:
    return "http://" + tomllib.loads(config.read_text("utf-8"))["metrics"]["listen"]


@pytest.fixture
def supervised(
    tmp_path: Path, downstream: Downstream
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    config = write_config(tmp_path, port, downstream.port, workers=2)
    proc = subprocess.Popen([CONGVU, "serve", "--config", str(config)], start_new_session=True)
    log = tmp_path / "gateway.log"
    try:
        # Both workers listening (not just started) before any client connects.
        wait_for(lambda: log.exists() and started_workers(log) == 2, timeout=30)
        yield proc, port, config
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and any worker left
        proc.wait()


def started_workers(log: Path) -> int:
    return sum(e["event"] == "gateway.started" for e in events(log))


def send(port: int, n: int, sender: str = OFFICIAL) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(sender)
        smtp.rcpt(CLERK)
        return smtp.data(message(from_=sender, subject=f"m{n}"))


def worker_pids(config: Path) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's log."""
    started = [e for e in events(config.parent / "gateway.log") if e["event"] == "worker.started"]
    return {int(e["worker"]): int(e["pid"]) for e in started}  # type: ignore[call-overload]


def test_two_workers_share_the_port_and_the_metrics(supervised) -> None:  # type: ignore[no-untyped-def]
    """Connections spread over both workers; each keeps its own intact hash chain; /metrics
    sums both; SIGHUP reaches both; SIGTERM stops all with exit status 0."""
    proc, port, config = supervised
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda n: send(port, n)[0], range(24)))
    assert replies == [250] * 24
    with sqlite3.connect(config.parent / "decisions.sqlite") as db:
        counts = dict(db.execute("SELECT instance, COUNT(*) FROM decisions GROUP BY 1"))
    assert set(counts) == {"gw.lamdong.gov.vn/w1", "gw.lamdong.gov.vn/w2"}
    assert sum(counts.values()) == 24
    store = SqliteStore(config.parent / "decisions.sqlite")
    assert store.verify() == []
    store.close()

    assert send(port, 99, "x@gmail.com")[0] == 550
    text = get(metrics_url(config) + "/metrics")[1].decode()
    assert 'congvu_decisions_total{reason="none",unit="-",verdict="accept"} 24.0' in text
    assert (
        'congvu_decisions_total{reason="sender.personal_domain",unit="-",verdict="reject"} 1.0'
        in text
    )

    proc.send_signal(signal.SIGHUP)
    log = config.parent / "gateway.log"
    wait_for(lambda: sum(e["event"] == "policy.reloaded" for e in events(log)) == 2)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    names = [e["event"] for e in events(log)]
    assert names.count("gateway.stopped") == 2 and names[-1] == "supervisor.stopped"


def test_a_killed_worker_is_restarted_and_mail_keeps_flowing(supervised) -> None:  # type: ignore[no-untyped-def]
    _, port, config = supervised
    first = worker_pids(config)
    subprocess.run(["kill", "-KILL", str(first[1])], check=True)
    wait_for(lambda: started_workers(config.parent / "gateway.log") == 3, timeout=30)
    assert worker_pids(config)[1] != first[1]
    health = json.loads(get(metrics_url(config) + "/health")[1])
    assert health["status"] == "ok" and health["restarts"] == 1
    assert [send(port, n)[0] for n in range(6)] == [250] * 6
    died = [e for e in events(config.parent / "gateway.log") if e["event"] == "worker.died"]
    assert died[0]["returncode"] == -signal.SIGKILL
    # The survivor re-read the policy when the new worker started, so both judge alike.
    reloads = [e for e in events(config.parent / "gateway.log") if e["event"] == "policy.reloaded"]
    assert len(reloads) == 1


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    """`congvu serve` that is expected to stop by itself (it cannot start)."""
    return subprocess.run(
        [CONGVU, "serve", "--config", str(config)],
        check=False,
        timeout=30,
        capture_output=True,
        text=True,
    )


def test_a_worker_that_cannot_listen_stops_the_supervisor(
    tmp_path: Path, downstream: Downstream
) -> None:
    """Port taken by another program (no SO_REUSEPORT): one line, exit status 2, no worker
    started (so nothing respawns), no store created."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port, downstream.port, workers=2)
        result = serve_once(config)
    assert result.returncode == 2
    assert result.stderr == (
        f"congvu serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    names = [e["event"] for e in events(tmp_path / "gateway.log")]
    assert names == ["gateway.cannot_start"]
    assert not list(tmp_path.glob("*.sqlite*"))


def test_another_gateway_on_the_port_is_refused_too(
    tmp_path: Path, downstream: Downstream, supervised
) -> None:  # type: ignore[no-untyped-def]
    """A second supervisor on the same port would share it through SO_REUSEPORT and take half
    the mail with another configuration: it is refused like any other holder of the port."""
    _, port, _ = supervised
    (tmp_path / "second").mkdir()
    config = write_config(tmp_path / "second", port, downstream.port, workers=2)
    result = serve_once(config)
    assert result.returncode == 2
    assert "Address already in use" in result.stderr


def test_sigkill_never_leaves_a_250_the_downstream_lacks(
    tmp_path: Path, downstream: Downstream
) -> None:
    """Eight clients send while the whole gateway (supervisor and workers) is SIGKILLed: every
    message a client saw 250 for is at the downstream; the rest the clients still hold."""
    port = free_port()
    config = write_config(tmp_path, port, downstream.port, workers=2)
    proc = subprocess.Popen([CONGVU, "serve", "--config", str(config)], start_new_session=True)
    wait_for(lambda: listening(port))
    downstream.handler.data_delay = 0.01

    def client(k: int) -> list[str]:
        accepted = []
        for n in range(200):
            subject = f"c{k}-{n}"
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                    smtp.ehlo("client.test")
                    smtp.mail(OFFICIAL)
                    smtp.rcpt(CLERK)
                    if smtp.data(message(subject=subject))[0] == 250:
                        accepted.append(subject)
            except (OSError, smtplib.SMTPException):
                return accepted  # the gateway is gone
        return accepted

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, k) for k in range(8)]
        wait_for(lambda: len(downstream.handler.messages) >= 20)
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
        accepted = [s for f in futures for s in f.result()]
    proc.wait()
    delivered = {
        m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
        for m in downstream.handler.messages
    }
    assert accepted, "the clients should have had some mail accepted before the kill"
    assert set(accepted) <= delivered


def test_workers_do_not_outlive_a_killed_supervisor(supervised) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of the supervisor alone (outside systemd's cgroup): its workers get SIGTERM
    (PR_SET_PDEATHSIG) and drain, rather than accepting mail on the port with nobody
    watching them."""
    proc, port, config = supervised
    pids = list(worker_pids(config).values())
    proc.kill()
    proc.wait()

    def gone() -> bool:
        return all(not Path(f"/proc/{pid}").exists() for pid in pids)

    wait_for(gone, timeout=30)
    assert not listening(port)


def test_a_message_handed_over_when_the_gateway_is_killed_has_a_record(
    tmp_path: Path, downstream: Downstream
) -> None:
    """SIGKILL after the downstream has the whole message but before its answer (and so before
    the record): the client heard nothing and will send again. The copy the downstream keeps
    is explained all the same: at the next start the journal's entry becomes its record,
    verdict ``interrupted``, under the decision id the delivered copy carries."""
    port = free_port()
    config = write_config(tmp_path, port, downstream.port, workers=1)
    proc = subprocess.Popen([CONGVU, "serve", "--config", str(config)], start_new_session=True)
    wait_for(lambda: listening(port))
    downstream.handler.reply_delay = 3  # the downstream has queued it, and takes its time

    def client() -> int:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("client.test")
                smtp.sendmail(OFFICIAL, [CLERK], message(subject="giua chung"))
                return 0
        except (OSError, smtplib.SMTPException):
            return -1  # the gateway went away: the client keeps the message

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sent = pool.submit(client)
        wait_for(lambda: len(downstream.handler.messages) == 1)
        os.killpg(proc.pid, signal.SIGKILL)
        assert sent.result() == -1
    proc.wait()
    [copy] = downstream.handler.messages
    decision_id = copy.data.split(b"policy.decision=")[1].split()[0].decode()
    store = SqliteStore(tmp_path / "decisions.sqlite")
    assert store.get(decision_id) is None  # what the kill left: a delivery, no record
    store.close()
    downstream.handler.reply_delay = 0
    restarted = subprocess.Popen([CONGVU, "serve", "--config", str(config)])
    try:
        # Started (both workers have read the journal at start-up), not only listening.
        wait_for(lambda: started_workers(tmp_path / "gateway.log") == 2, timeout=30)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
    store = SqliteStore(tmp_path / "decisions.sqlite")
    record = store.get(decision_id)
    assert store.verify() == []
    store.close()
    assert record is not None
    assert (record["verdict"], record["reply"]) == ("interrupted", "")
    assert record["headers"]["subject"] == "giua chung"
    logged = [e for e in events(tmp_path / "gateway.log") if e["event"] == "journal.interrupted"]
    assert [e["decision_id"] for e in logged] == [decision_id]


def test_congvu_milter_with_workers_listens_where_it_was_told(
    tmp_path: Path, downstream: Downstream
) -> None:
    """`congvu milter --listen` under a supervisor: every worker answers on that address."""
    from kilter.protocol.messages import Continue

    from tests.support.milter import MilterClient

    milter = free_port()
    config = write_config(tmp_path, free_port(), downstream.port, workers=2)
    proc = subprocess.Popen(
        [CONGVU, "milter", "--listen", f"127.0.0.1:{milter}", "--config", str(config)],
        start_new_session=True,
    )
    try:
        log = tmp_path / "gateway.log"
        wait_for(
            lambda: log.exists() and sum(e["event"] == "milter.started" for e in events(log)) == 2,
            timeout=30,
        )
        for _ in range(4):  # the kernel spreads the connections over both workers
            client = MilterClient(milter)
            client.connect()
            client.helo()
            client.mail(OFFICIAL, login="a.nguyen")
            client.rcpt(CLERK)
            assert isinstance(client.message(message())[-1], Continue)
            client.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    started = [e for e in events(log) if e["event"] == "milter.started"]
    assert {e["listen"] for e in started} == {f"127.0.0.1:{milter}"}
