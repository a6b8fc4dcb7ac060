"""RFC 7440 windowsize against a third-party client: atftp (Debian package `atftp`).

atftp 0.8.0 (Debian 12) implements windowsize in its client (`--option
"windowsize N"`), so it checks fleet's TftpServer against an implementation
we did not write: OACK parsing, windows of N blocks with one ACK each, the
short last window, a file that ends on a window boundary (empty last block),
clamping (the client asks more than the server allows) and blksize + tsize +
windowsize together. Loopback and a high port: no root needed. Skipped when
atftp is not installed (scripts/test installs it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from fleet.boot.tftp import TftpServer

ATFTP = shutil.which("atftp") or "/usr/bin/atftp"

# scripts/test installs atftp; a missing client fails loudly rather than skipping


async def _atftp_get(port: int, name: str, dest: Path, options: list[str],
                     timeout: float = 60) -> tuple[int, str]:
    argv = [ATFTP, "--verbose", "--trace"]
    for o in options:
        argv += ["--option", o]
    argv += ["-g", "-r", name, "-l", str(dest), "127.0.0.1", str(port)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        proc.kill()
        await proc.wait()
        raise AssertionError(f"atftp {options} did not finish in {timeout}s")
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    events: list[tuple[str, dict]] = []
    srv = TftpServer(root=root, host="127.0.0.1", port=0, max_windowsize=64,
                     on_event=lambda kind, **f: events.append((kind, f)))
    await srv.start()
    srv.events = events  # type: ignore[attr-defined]
    srv.root_dir = root  # type: ignore[attr-defined]
    yield srv
    await srv.stop()


def _write(root: Path, name: str, size: int) -> str:
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _done(server) -> dict:
    done = [f for k, f in server.events if k == "transfer-done"]
    failed = [f for k, f in server.events if k == "transfer-failed"]
    assert done and not failed, server.events
    return done[-1]


@pytest.mark.parametrize(
    ("size", "blksize", "window"),
    [
        (1024 * 1024 + 123, 1428, 16),  # the setting; short last window
        (1428 * 16 * 8, 1428, 16),  # ends on a window boundary: empty last block
        (300_000, 512, 4),  # OVMF-like: default blksize, windowsize 4
        (50_000, 1468, 1),  # windowsize 1 is lockstep
    ],
)
async def test_atftp_windowed_download(server, tmp_path, size, blksize, window):
    want = _write(server.root_dir, "file.bin", size)
    dest = tmp_path / "out.bin"
    rc, out = await _atftp_get(server.port, "file.bin", dest,
                               [f"blksize {blksize}", "tsize", f"windowsize {window}"])
    assert rc == 0, out
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == want, out
    done = _done(server)
    assert done["windowsize"] == window and done["blksize"] == blksize, done
    assert done["bytes"] == size
    # one ACK per window (and one for the OACK), from atftp's own trace; a
    # retransmission under load may add one or two
    blocks = size // blksize + 1
    windows = -(-blocks // window)
    acks = sum(1 for line in out.splitlines() if line.startswith("sent ACK"))
    assert windows + 1 <= acks <= windows + 3, (acks, windows, out[-2000:])


async def test_atftp_windowsize_clamped_by_server(server, tmp_path):
    """The client asks 256; the server allows 64 and says so in the OACK; atftp
    follows the server's value."""
    want = _write(server.root_dir, "big.bin", 3 * 1024 * 1024)
    dest = tmp_path / "out.bin"
    rc, out = await _atftp_get(server.port, "big.bin", dest,
                               ["blksize 1428", "windowsize 256"])
    assert rc == 0, out
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == want
    assert _done(server)["windowsize"] == 64


async def test_atftp_missing_file_gets_error(server, tmp_path):
    rc, out = await _atftp_get(server.port, "nope.bin", tmp_path / "out.bin",
                               ["windowsize 16"])
    assert rc != 0
    refused = [f for k, f in server.events if k == "refused"]
    assert refused and refused[0]["code"] == 1
