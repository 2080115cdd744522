"""The raw SMTP client that plays one dialogue against a gateway: it sends each step as
written (pipelined, a few bytes at a time, a failed TLS handshake, a hang-up), reads every
reply, and checks each reply line as it comes (well formed, ended by CRLF, a final reply
before the gateway closes, a 250 at end-of-data only from the gateway's relay)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl

from bench.fuzz.dialogues import Body, Dialogue, Send, _token
from bench.fuzz.replies import reply_problem, reply_warning
from bench.fuzz.report import DialogueReport

REPLY_TIMEOUT = 60.0  # seconds a dialogue waits for one reply before calling it a hang


_ACCEPTED = re.compile(r"250 2\.0\.0 Ok: accepted as (\S+)")


class _Closed(Exception):
    """The connection is gone (``reset``: by a TCP reset, which loses replies in flight)."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__("reset" if reset else "closed")
        self.reset = reset


class _Session:
    """A raw SMTP client: what it sent and received, and checks on every reply line."""

    def __init__(
        self,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        report: DialogueReport,
        transcript: list[str] | None,
    ) -> None:
        self.index, self.reader, self.writer = index, reader, writer
        self.report, self.transcript = report, transcript
        self.last: list[str] = []

    async def send(
        self, data: bytes, fragmented: bool = False, rng: random.Random | None = None
    ) -> None:
        if self.transcript is not None:
            self.transcript.append(f"C: {data[:300]!r}{'...' if len(data) > 300 else ''}")
        try:
            if fragmented and rng is not None:
                pos = 0
                while pos < len(data):
                    step = rng.randrange(1, 20)
                    self.writer.write(data[pos : pos + step])
                    await self.writer.drain()
                    pos += step
            else:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _Closed(reset=True) from exc

    async def reply(self) -> list[str]:
        """One reply (all its lines); raise _Closed at end of file."""
        lines: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
            except TimeoutError:
                self.report.fail(f"no reply within {REPLY_TIMEOUT:g} s", self.index)
                raise _Closed from None
            except (ConnectionError, ssl.SSLError) as exc:
                raise _Closed(reset=True) from exc
            if not raw:
                raise _Closed
            if self.transcript is not None:
                self.transcript.append(f"S: {raw!r}")
            self.report.replies += 1
            if not raw.endswith(b"\r\n"):
                self.report.fail("reply line not ended by CRLF", self.index, repr(raw))
            if not raw.isascii():
                self.report.fail("reply line not ASCII", self.index, repr(raw))
            text = raw.rstrip(b"\r\n").decode("ascii", "backslashreplace")
            problem = reply_problem(text)
            if problem:
                self.report.fail(problem, self.index, repr(raw))
            warning = reply_warning(text)
            if warning:
                self.report.warn(warning, self.index, repr(raw))
            lines.append(text)
            self.last = lines
            if text[3:4] != "-":
                return lines


async def _run_dialogue(
    *,
    index: int,
    dialogue: Dialogue,
    port: int,
    report: DialogueReport,
    accepted: list[tuple[str, int]],
    rng: random.Random,
    transcript: list[str] | None = None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    session = _Session(index, reader, writer, report, transcript)
    expecting = 1  # the greeting
    ending = "closed by client"
    try:
        await session.reply()
        expecting = 0
        last_code = ""
        for step in dialogue.steps:
            if isinstance(step, Send):
                report.commands += len(step.lines)
                await session.send(b"".join(step.lines), step.fragmented, rng)
                expecting = len(step.lines)
                for _ in step.lines:
                    last_code = (await session.reply())[-1][:3]
                    expecting -= 1
                if _token(step.lines[-1]) == b"QUIT":
                    ending = "QUIT"
                    break
                if _token(step.lines[-1]) == b"STARTTLS" and last_code == "220":
                    if step.tls == "handshake":
                        context = ssl.create_default_context()
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                        try:
                            await asyncio.wait_for(writer.start_tls(context), REPLY_TIMEOUT)
                        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                            report.fail("TLS handshake failed", index, repr(exc))
                            ending = "TLS failed"
                            break
                        continue
                    ending = f"TLS {step.tls}"
                    if step.tls == "garbage":
                        await session.send(b"\x16\x03\x01\x00\x10" + b"\x00" * 16 + b"\r\n")
                    elif step.tls == "plaintext":
                        await session.send(b"EHLO plain.example\r\nMAIL FROM:<a@b>\r\n")
                    if step.tls != "close":
                        with contextlib.suppress(_Closed):
                            await session.reply()
                            report.fail("plaintext reply after a failed TLS handshake", index)
                    break
            elif isinstance(step, Body):
                if last_code != "354":
                    continue  # a client does not send the message after a refused DATA
                if step.then == "cut":
                    await session.send(step.data[: len(step.data) // 2])
                    ending = "hung up mid-DATA"
                    break
                await session.send(step.data)
                if step.then == "vanish":
                    ending = "hung up awaiting the end-of-data reply"
                    break
                expecting = 1
                final = (await session.reply())[-1]
                expecting = 0
                last_code = final[:3]
                report.data_replies[last_code] += 1
                if last_code == "250":
                    m = _ACCEPTED.fullmatch(final)
                    if m is None:
                        report.fail("250 to end-of-data not from the gateway's relay", index, final)
                    else:
                        accepted.append((m.group(1), index))
            else:
                if step.partial:
                    await session.send(step.partial)
                ending = "hung up"
                if step.abort:
                    writer.transport.abort()
                break
    except _Closed as closed:
        last = session.last[-1] if session.last else ""
        ending = f"{'reset' if closed.reset else 'closed'} by gateway after {last[:3] or 'nothing'}"
        # A reset (the gateway hung up while the client was still sending) loses the replies
        # in flight; a clean close must come after a final reply saying why.
        if expecting and not closed.reset and last[:3] not in ("421", "221", "502"):
            report.fail("connection closed without a final reply", index, last)
    finally:
        report.endings[ending.split(" after ")[0]] += 1
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
