"""Containers an officer opens with one click (issue 15, class 3): a corpus to extend. Each
case wraps a document as the file to attach: (file name, bytes).

- :data:`OPENED`: the gateway opens them and judges the document inside as if attached;
- :data:`NEVER_PASS`: they can never pass (nesting, a bomb): 550 ``document.unreadable``,
  not a 4xx that the sender's server would retry for days.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NEVER_PASS", "OPENED", "Container"]


@dataclass(frozen=True)
class Container:
    name: str
    wrap: Callable[[str, bytes], tuple[str, bytes]]  # (document's name, document) -> the file


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _huge_tar(name: str, data: bytes) -> bytes:
    """A tar whose member's header declares a size beyond 2**63 (base-256), checksum fixed:
    tarfile overflows on it (found by the fuzzer)."""
    header = bytearray(_tar(name, data))
    header[124:136] = b"\x80" + (2**80).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header[:512])
    return bytes(header)


def _self_extractor(name: str, data: bytes) -> bytes:
    """A zip behind a program stub, as self-extracting archives are made; the offsets in the
    zip are left as they are, which archive tools accept."""
    return b"MZ\x90\x00" + b"\x00" * 4092 + _zip(name, data)


OPENED: tuple[Container, ...] = (
    Container("tar", lambda n, d: ("van-ban.tar", _tar(n, d))),
    Container("tar.gz", lambda n, d: ("van-ban.tar.gz", gzip.compress(_tar(n, d)))),
    Container("gzip of the file", lambda n, d: (f"{n}.gz", gzip.compress(d))),
    Container("zip behind a stub", lambda n, d: ("van-ban.exe", _self_extractor(n, d))),
    Container("zip", lambda n, d: ("van-ban.zip", _zip(n, d))),
    Container("bzip2 of the file", lambda n, d: (f"{n}.bz2", bz2.compress(d))),
    Container("xz of the file", lambda n, d: (f"{n}.xz", lzma.compress(d))),
    Container("tar.bz2", lambda n, d: ("van-ban.tar.bz2", bz2.compress(_tar(n, d)))),
    Container("tar.xz", lambda n, d: ("van-ban.tar.xz", lzma.compress(_tar(n, d)))),
)


NEVER_PASS: tuple[Container, ...] = (
    Container(
        "zip inside a tar.gz", lambda n, d: ("a.tar.gz", gzip.compress(_tar("b.zip", _zip(n, d))))
    ),
    Container("tar inside a zip", lambda n, d: ("a.zip", _zip("b.tar", _tar(n, d)))),
    Container("gzip inside a gzip", lambda n, d: ("a.gz.gz", gzip.compress(gzip.compress(d)))),
    Container(
        "xz inside a tar.bz2",
        lambda n, d: ("a.tar.bz2", bz2.compress(_tar("b.xz", lzma.compress(d)))),
    ),
    Container("a tar declaring a member of 2**80 bytes", lambda n, d: ("a.tar", _huge_tar(n, d))),
    Container(
        "an xz bomb (60 MB of zeros)",
        lambda n, d: ("bom.xz", lzma.compress(d + b"\0" * (60 * 1024 * 1024))),
    ),
    Container(
        "a gzip bomb (60 MB of zeros)",
        lambda n, d: ("bom.tar.gz", gzip.compress(_tar(n, d) + b"\0" * (60 * 1024 * 1024), 9)),
    ),
)
