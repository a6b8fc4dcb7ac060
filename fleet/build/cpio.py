"""A writer for the "newc" cpio format (SVR4 without CRC), the format the Linux
kernel unpacks an initramfs from (Documentation/driver-api/early-userspace/
buffer-format.rst).

Why hand-written: PyPI has no maintained pure-Python cpio writer (`cpiofile`
was last released in 2011); `libarchive-c` is maintained but binds the C
libarchive, a system library fleet would then need on every operator machine
for what is a 110-byte ASCII header per file. The format is small and fixed:

    header: "070701" + 13 fields of 8 hex digits
            (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
             rdevmajor, rdevminor, namesize incl. NUL, check = 0)
    name + NUL, padded to a multiple of 4 (counting the 110-byte header)
    data, padded to a multiple of 4
    ... and a last entry named "TRAILER!!!".

The output is reproducible: entries are written in the order given, with the
mtime, uid and gid the caller sets (0 by default) and inode numbers counted
from 1, so the same inputs give the same bytes (and the same sha256).
Tested against GNU cpio (`cpio -t`, `cpio -idm`) and by the kernel itself.
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
MAX_FIELD = 0xFFFFFFFF


@dataclass(frozen=True)
class Entry:
    """One archive member. `name` is relative ("bin/busybox", no leading "/")."""

    name: str
    mode: int  # full st_mode: type bits | permissions
    data: bytes = b""  # file contents, or the target of a symlink
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> "Entry":
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> "Entry":
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> "Entry":
        return cls(name, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, perm: int = 0o600) -> "Entry":
        return cls(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _check_name(name: str) -> bytes:
    if not name or name.startswith("/") or "\0" in name:
        raise ValueError(f"cpio member name {name!r}: relative, non-empty, no NUL")
    if any(part in ("", "..") for part in name.split("/")) and name != ".":
        raise ValueError(f"cpio member name {name!r}: no empty or '..' components")
    return name.encode()


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def header(ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int,
           rdev: tuple[int, int], namesize: int) -> bytes:
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    for value in fields:
        if not 0 <= value <= MAX_FIELD:
            raise ValueError(f"cpio header field {value} does not fit 8 hex digits")
    return MAGIC + b"".join(b"%08X" % v for v in fields)


def write(out: BinaryIO, entries: Iterable[Entry]) -> int:
    """Write the archive (with its trailer) to `out`; returns the bytes written."""
    written = 0

    def put(data: bytes) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    ino = 0
    for e in entries:
        ino += 1
        name = _check_name(e.name)
        kind = stat.S_IFMT(e.mode)
        if kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK):
            raise ValueError(f"cpio member {e.name!r}: unsupported file type {oct(kind)}")
        if e.data and kind not in (stat.S_IFREG, stat.S_IFLNK):
            raise ValueError(f"cpio member {e.name!r}: only files and symlinks have data")
        nlink = 2 if kind == stat.S_IFDIR else 1
        put(header(ino, e.mode, e.uid, e.gid, nlink, e.mtime, len(e.data), e.rdev,
                   len(name) + 1))
        put(name + b"\0" + _pad(110 + len(name) + 1))
        put(e.data + _pad(len(e.data)))
    name = TRAILER.encode()
    put(header(0, 0, 0, 0, 1, 0, 0, (0, 0), len(name) + 1))
    put(name + b"\0" + _pad(110 + len(name) + 1))
    return written


def archive(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    write(buf, entries)
    return buf.getvalue()


def gzipped(entries: Iterable[Entry], level: int = 9) -> bytes:
    """The archive gzip-compressed with mtime 0 (reproducible), as an initrd."""
    return gzip.compress(archive(entries), compresslevel=level, mtime=0)


def read(data: bytes) -> list[Entry]:
    """Parse a newc archive (for tests and `fleet` checks of its own output)."""
    entries: list[Entry] = []
    pos = 0
    while True:
        if data[pos:pos + 6] != MAGIC:
            raise ValueError(f"no newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        (_ino, mode, uid, gid, _nlink, mtime, size, _maj, _min, rmaj, rmin, namesize,
         _check) = fields
        start = pos + 110
        name = data[start:start + namesize - 1].decode()
        pos = start + namesize
        pos += -pos % 4
        if name == TRAILER:
            return entries
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        entries.append(Entry(name, mode, body, uid, gid, mtime, (rmaj, rmin)))
