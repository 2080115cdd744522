"""Archives and compressed files around the documents: zip (with fixed timestamps), and the
containers an officer opens with one click that the gateway opens too (issue 15): gzip of a
PDF, tar and tar.gz holding PDFs (or a zip or tar, nested), a zip behind a stub of random
length (a self-extractor, or a polyglot), a truncated gzip, a gzip whose trailer lies about
the size or checksum, one with a file name in its header, two gzip members in one file, bz2
and xz; tar members named ``../`` or absolute, and a tar whose header declares a huge size.
``_container`` draws one. Nothing here reads the clock: the bytes depend on the generator
only."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile
import zipfile
import zlib

from bench.fuzz.draw import _chance, _drew, _garbage, _pick

_MTIME = 1795000000  # 2026-11-18: every timestamp in an archive (the clock would vary)


def _zip(rng: random.Random, members: list[tuple[str, bytes]]) -> bytes:
    """A zip archive with fixed timestamps (so the bytes are deterministic)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 22, 10, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if _chance(rng, 0.7) else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return buffer.getvalue()


def _tar(rng: random.Random, members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    kind = _pick(rng, (tarfile.GNU_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT))
    with tarfile.open(fileobj=buffer, mode="w", format=kind) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), _MTIME
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _gzip_named(rng: random.Random, data: bytes, name: bytes) -> bytes:
    """A gzip file with the original file name in its header (FNAME), written by hand."""
    deflate = zlib.compressobj(wbits=-15)
    body = deflate.compress(data) + deflate.flush()
    head = b"\x1f\x8b\x08\x08" + b"\x00\x00\x00\x00\x00" + _pick(rng, (b"\x03", b"\x00", b"\xff"))
    trailer = (zlib.crc32(data)).to_bytes(4, "little") + (len(data) % 2**32).to_bytes(4, "little")
    return head + name + b"\x00" + body + trailer


def _huge_size(rng: random.Random, tar: bytes) -> bytes:
    """The first header of ``tar`` declaring another size (huge, off by a little, or in
    base-256), its checksum made right again so that the header is read."""
    if len(tar) < 512:
        return tar
    header = bytearray(tar[:512])
    roll = rng.random()
    if roll < 0.4:
        header[124:136] = b"77777777777\x00"
    elif roll < 0.7:
        header[124:136] = b"\x80" + rng.randrange(2**40, 2**88).to_bytes(11, "big")
    else:
        declared = int(header[124:135].strip(b"\x00 ") or b"0", 8)
        header[124:136] = b"%011o\x00" % max(0, declared + rng.randrange(-600, 600))
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + tar[512:]


def _lying_gzip(rng: random.Random, data: bytes) -> bytes:
    """A gzip whose trailer lies: the size (ISIZE), or the checksum."""
    packed = bytearray(_gzip(data))
    if _chance(rng, 0.7):
        packed[-4:] = _pick(rng, (0, 1, 2**32 - 1, rng.randrange(2**32))).to_bytes(4, "little")
    else:
        packed[-8:-4] = rng.randrange(2**32).to_bytes(4, "little")
    return bytes(packed)


def _member_name(rng: random.Random, name: str) -> str:
    if _chance(rng, 0.85):
        return name
    return _pick(
        rng,
        (
            f"../{name}",
            f"../../../../etc/{name}",
            f"/{name}",
            f"/tmp/../{name}",
            f"./{name}",
            f"thu-muc/{name}",
            "",
            f"{'d/' * 60}{name}",
            f"tờ trình/{name}",
        ),
    )


def _container(rng: random.Random, document: bytes, name: str) -> tuple[bytes, str, str]:
    """``document`` (a file called ``name``) in an archive or compressed: the bytes, the
    declared type and the file name of the attachment."""
    roll = rng.random()
    if roll < 0.18:
        _drew("container.gzip")
        return _gzip(document), "application/gzip", f"{name}.gz"
    if roll < 0.34:
        _drew("container.tar")
        members = [(_member_name(rng, name), document)]
        if _chance(rng, 0.2):
            members.append(("ghi-chu.txt", b"Kinh gui.\n"))
        return _tar(rng, members), "application/x-tar", "van-ban.tar"
    if roll < 0.5:
        _drew("container.tar.gz")
        tar = _tar(rng, [(_member_name(rng, name), document)])
        return _gzip(tar), _pick(rng, ("application/gzip", "application/x-gzip")), "hs.tar.gz"
    if roll < 0.6:
        _drew("container.nested")
        inner_zip = _zip(rng, [(name, document)])
        inner_tar = _tar(rng, [(name, document)])
        data = _pick(
            rng,
            (
                _gzip(_tar(rng, [("b.zip", inner_zip)])),
                _tar(rng, [("b.zip", inner_zip)]),
                _tar(rng, [("b.tar", inner_tar)]),
                _zip(rng, [("b.tar", inner_tar)]),
                _zip(rng, [("b.tar.gz", _gzip(inner_tar))]),
                _gzip(_gzip(document)),
                _gzip(inner_zip),
            ),
        )
        return data, "application/octet-stream", "long-nhau.bin"
    if roll < 0.7:
        _drew("container.stub-zip")
        stub = _pick(rng, (b"MZ", b"MZ\x90\x00", b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"GIF89a"))
        stub += _garbage(rng, rng.randrange(0, 5000))
        zipped = _zip(rng, [(name, document)])
        return stub + zipped, "application/octet-stream", "van-ban.exe"
    if roll < 0.76:
        _drew("container.gzip-truncated")
        packed = _gzip(document)
        return packed[: rng.randrange(len(packed) + 1)], "application/gzip", f"{name}.gz"
    if roll < 0.82:
        _drew("container.gzip-lying")
        return _lying_gzip(rng, document), "application/gzip", f"{name}.gz"
    if roll < 0.86:
        _drew("container.gzip-odd")
        if _chance(rng, 0.5):
            header_name = _pick(rng, (b"../x.pdf", name.encode(), b"/etc/passwd", b"a" * 300))
            return _gzip_named(rng, document, header_name), "application/gzip", "x.gz"
        # two members: a reader that stops after the first sees only the note
        data = _gzip(b"Kinh gui.\n") + _gzip(document)
        return data, "application/gzip", f"{name}.gz"
    if roll < 0.93:
        _drew("container.bz2-xz")
        if _chance(rng, 0.5):
            return bz2.compress(document), "application/x-bzip2", f"{name}.bz2"
        return lzma.compress(document), "application/x-xz", f"{name}.xz"
    _drew("container.tar-huge-size")
    tar = _huge_size(rng, _tar(rng, [(_member_name(rng, name), document)]))
    if _chance(rng, 0.3):
        return _gzip(tar), "application/gzip", "hs.tar.gz"
    return tar, "application/x-tar", "hs.tar"
