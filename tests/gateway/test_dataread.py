"""The bulk DATA reader gives exactly what aiosmtpd's line-by-line reader gives, however the
bytes are split into packets, and never reads past the end of the data."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.dataread import MAX_LINE, DataRead, read_data

PIECES = [b"a", b"xyz", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"\n.\n", b"\0"]


def reference(stream: bytes, max_size: int | None) -> tuple[DataRead, bytes]:
    """aiosmtpd 1.4's rules, one CRLF line at a time: (what it reads, what is left)."""
    lines, size, problem, at = [], 0, "", 0
    while True:
        end = stream.index(b"\r\n", at) + 2
        line, at = stream[at:end], end
        if line == b".\r\n":
            break
        size += len(line)
        if len(line) - 2 > MAX_LINE:
            problem = "too_long"
        lines.append(line[1:] if line.startswith(b".") else line)
    if max_size is not None and size > max_size:
        problem = "too_much"  # unlike aiosmtpd, size wins over line length, in any order
    content = b"" if problem else b"".join(lines)
    return DataRead(content, problem, size), stream[at:]  # type: ignore[arg-type]


def run(
    stream: bytes, cuts: list[int], *, limit: int, max_size: int | None
) -> tuple[DataRead, bytes]:
    """Feed ``stream`` in packets split at ``cuts`` to a real StreamReader; read the DATA."""

    async def main() -> tuple[DataRead, bytes]:
        reader = asyncio.StreamReader(limit=limit)

        async def feed() -> None:
            last = 0
            for cut in [*cuts, len(stream)]:
                reader.feed_data(stream[last:cut])
                last = cut
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        got = await read_data(reader, max_size=max_size, spool_over=64)
        await feeder
        return got, await reader.read()

    return asyncio.run(main())


def test_random_streams_read_as_aiosmtpd_reads_them() -> None:
    """2,000 random streams of dots, CRs, LFs and text, in random packets, with a small
    buffer limit (so the overrun path runs too): same content, same refusal, same leftover."""
    rng = random.Random(20261122)
    for _ in range(2000):
        body = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 40)))
        if rng.random() < 0.1:
            body += b"b" * rng.randrange(990, 1010)  # around the line limit
        stream = body + b"\r\n.\r\nQUIT\r\n"
        cuts = sorted(rng.sample(range(1, len(stream)), min(5, len(stream) - 1)))
        max_size = rng.choice([None, 20, 1000])
        got, left = run(stream, cuts, limit=rng.choice([4, 16, 64 * 1024]), max_size=max_size)
        want, want_left = reference(stream, max_size)
        assert (got, left) == (want, want_left), stream


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b".\r\nQUIT\r\n", b""),  # an empty message
        (b"..\r\n.\r\n", b".\r\n"),  # a dot-stuffed lone dot is data
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),  # <LF>.<LF> is data
        (b"a\r.\rb\r\n.\r\n", b"a\r.\rb\r\n"),  # <CR>.<CR> is data
        (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n"),  # <LF>.<CRLF> is data
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\nb\r\n"),  # <CRLF>.<LF>: a data line, dot-stuffed
    ],
)
def test_only_crlf_dot_crlf_ends_the_data(stream: bytes, content: bytes) -> None:
    """The SMTP-smuggling shapes stay inside the message, byte for byte split or not."""
    for cut in range(1, len(stream)):
        got, _ = run(stream, [cut], limit=64 * 1024, max_size=None)
        assert got.content == content and got.problem == ""


def test_a_large_body_is_spooled_and_returned_whole() -> None:
    """1.4 MB of base64-like lines (the 64-byte spool threshold is far below it)."""
    line = b"QUJD" * 19 + b"\r\n"
    body = line * (1_400_000 // len(line))
    got, left = run(
        body + b".\r\nMAIL FROM:<a@b>\r\n", [100_000, 700_001], limit=65536, max_size=None
    )
    assert got.content == body and left == b"MAIL FROM:<a@b>\r\n"


def test_a_client_going_away_mid_data_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        run(b"From: a@b\r\n\r\nno end", [], limit=1024, max_size=None)
