"""fleet.build.cpio against GNU cpio (package cpio): what it lists and unpacks
is what we wrote; plus round trips through our own reader and the format's
alignment rules."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from fleet.build import cpio
from fleet.build.cpio import Entry

CPIO = shutil.which("cpio")
needs_cpio = pytest.mark.skipif(CPIO is None, reason="GNU cpio missing: apt-get install cpio")

ENTRIES = [
    Entry.directory("bin"),
    Entry.directory("etc"),
    Entry.directory("etc/wiper"),
    Entry.file("bin/busybox", bytes(range(256)) * 7 + b"x", 0o755),
    Entry.symlink("bin/sh", "busybox"),
    Entry.file("init", b"#!/bin/sh\necho hi\n", 0o755),
    Entry.file("etc/wiper/empty", b""),
    Entry.file("etc/wiper/odd name-1.ko", b"abc"),
    Entry.char_device("dev-console", 5, 1),
]


@needs_cpio
def test_gnu_cpio_lists_our_archive():
    out = subprocess.run([CPIO, "-t", "--quiet"], input=cpio.archive(ENTRIES),
                         capture_output=True, check=True).stdout.decode()
    assert out.splitlines() == [e.name for e in ENTRIES]


@needs_cpio
def test_gnu_cpio_unpacks_files_modes_links_and_devices(tmp_path):
    subprocess.run([CPIO, "-idm", "--quiet", "--no-absolute-filenames"],
                   input=cpio.archive(ENTRIES), cwd=tmp_path, check=True)
    for e in ENTRIES:
        path = tmp_path / e.name
        st_ = os.lstat(path)
        assert stat.S_IFMT(st_.st_mode) == stat.S_IFMT(e.mode), e.name
        if stat.S_ISREG(e.mode):
            assert path.read_bytes() == e.data, e.name
            assert stat.S_IMODE(st_.st_mode) == stat.S_IMODE(e.mode), e.name
        elif stat.S_ISLNK(e.mode):
            assert os.readlink(path) == e.data.decode()
        elif stat.S_ISCHR(e.mode):
            assert (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == (5, 1)
    assert (tmp_path / "init").stat().st_mtime == 0  # -m kept our mtime 0


@needs_cpio
def test_gzipped_archive_is_what_the_kernel_reads_and_is_reproducible(tmp_path):
    data = cpio.gzipped(ENTRIES)
    assert data == cpio.gzipped(ENTRIES)  # same inputs, same bytes
    assert data[:2] == b"\x1f\x8b"
    raw = gzip.decompress(data)
    assert raw == cpio.archive(ENTRIES)
    out = subprocess.run([CPIO, "-t", "--quiet"], input=raw, capture_output=True,
                         check=True).stdout.decode()
    assert "bin/busybox" in out.splitlines()


def test_layout_follows_the_newc_rules():
    raw = cpio.archive([Entry.file("a", b"12345")])
    assert raw[:6] == b"070701" and len(raw) % 4 == 0
    # header (110) + "a\0" padded to 112, then 5 data bytes padded to 8
    assert raw[110:112] == b"a\0" and raw[112:117] == b"12345" and raw[117:120] == b"\0" * 3
    fields = [int(raw[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    assert fields[1] == stat.S_IFREG | 0o644 and fields[6] == 5 and fields[11] == 2
    assert raw[120:126] == b"070701"
    assert cpio.TRAILER.encode() in raw[120:]


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "..", "a\0b"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError):
        cpio.archive([Entry.file(name, b"")])


def test_data_only_on_files_and_links_and_fields_fit():
    with pytest.raises(ValueError):
        cpio.archive([Entry(name="d", mode=stat.S_IFDIR | 0o755, data=b"x")])
    with pytest.raises(ValueError):
        cpio.archive([Entry(name="f", mode=stat.S_IFREG | 0o644, uid=1 << 32)])
    with pytest.raises(ValueError):
        cpio.archive([Entry(name="s", mode=stat.S_IFSOCK | 0o644)])


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1,
                max_size=40).filter(lambda n: n not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, st.binary(max_size=300), st.integers(0, 0o777)),
                max_size=12, unique_by=lambda t: t[0]))
def test_round_trip_through_our_reader(files):
    entries = [Entry.file(n, d, p) for n, d, p in files]
    raw = cpio.archive(entries)
    assert len(raw) % 4 == 0
    back = cpio.read(raw)
    assert [(e.name, e.data, e.mode) for e in back] == \
        [(e.name, e.data, e.mode) for e in entries]
