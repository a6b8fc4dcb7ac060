"""Broken disks, folders and secrets: each is one clear `fleet: ...` line and
exit 3, and nothing already stored is lost.

Faults are caused for real: a full disk is a small tmpfs filled up, an
unwritable folder is a read-only mount (the suite runs as root, which file
modes do not stop), an unreadable secret is a folder where the file should be.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.engine import Engine
from fleet.errors import EnvironmentProblem
from fleet.tokens import TokenSigner

from support.faults import fill, tmpfs
from support.profiles import write_profile

MAC = "ac:1f:6b:00:00:26"


def fleet(xdg, profile, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=xdg, capture_output=True, text=True,
                          timeout=timeout)


def one_line(proc) -> str:
    """The one error line (serve also logs its parts stopping; no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fleet: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.root
def test_a_full_disk_during_lease_is_one_line_and_loses_nothing(tmp_path, xdg):
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        profile = write_profile(tmp_path, overrides={"store": str(disk / "t.db"), "nodes": []})

        async def setup():
            async with await Engine.open(profile) as engine:
                engine.record_sighting(MAC, stage="firmware")
                await engine.flush_sightings()

        asyncio.run(setup())
        # another process's connection keeps the WAL index in place, so the
        # lease itself (not opening the store) is what meets the full disk
        other = sqlite3.connect(disk / "t.db")
        other.execute("SELECT count(*) FROM machines").fetchone()
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        filler = fill(disk)
        proc = fleet(xdg, profile, "lease", MAC, "--deployment", "debian12", "--hostname", "web9")
        assert proc.returncode == 3, proc.stderr
        line = one_line(proc)
        assert "database or disk is full" in line and str(disk / "t.db") in line
        other.close()
        filler.unlink()
        # the store is whole, the machine as it was, and it can be leased now
        db = sqlite3.connect(disk / "t.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT state FROM machines WHERE mac=?", (MAC,)).fetchone()[0] \
            == "discovered"
        db.close()
        proc = fleet(xdg, profile, "lease", MAC, "--deployment", "debian12", "--hostname", "web9")
        assert proc.returncode == 0, proc.stderr


@pytest.mark.root
def test_a_fresh_store_on_a_full_disk_leaves_no_empty_file(tmp_path, xdg):
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m"):
        profile = write_profile(tmp_path, overrides={"store": str(disk / "t.db")})
        fill(disk)
        proc = fleet(xdg, profile, "machines")
        assert proc.returncode == 3
        line = one_line(proc)
        assert str(disk / "t.db") in line and ("disk I/O error" in line or "is full" in line)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


@pytest.mark.root
def test_serve_with_a_read_only_data_folder_refuses_at_start(tmp_path, xdg):
    data = Path(xdg["XDG_DATA_HOME"])
    with tmpfs(data, "1m", "ro"):
        profile = write_profile(tmp_path)  # the store beside the profile is writable
        proc = fleet(xdg, profile, "serve", timeout=30)
        assert proc.returncode == 3
        line = one_line(proc)
        assert "data folder" in line and str(data) in line


def test_the_store_path_being_a_folder_says_so(tmp_path, xdg):
    (tmp_path / "t.db").mkdir()
    proc = fleet(xdg, write_profile(tmp_path), "machines")
    assert proc.returncode == 3
    line = one_line(proc)
    assert str(tmp_path / "t.db") in line and "is a folder" in line


def test_an_empty_secret_is_never_used_and_serve_refuses(tmp_path, xdg):
    profile = write_profile(tmp_path)
    secret = Path(xdg["XDG_DATA_HOME"]) / "fleet" / "t.secret"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"")
    with pytest.raises(EnvironmentProblem, match="fewer than the 32"):
        TokenSigner(secret).issue(1, MAC)
    proc = fleet(xdg, profile, "serve", timeout=30)
    assert proc.returncode == 3
    assert str(secret) in one_line(proc)
    assert secret.read_bytes() == b""  # left for the operator to look at


def test_an_unreadable_secret_stops_serve_at_start(tmp_path, xdg):
    profile = write_profile(tmp_path)
    secret = Path(xdg["XDG_DATA_HOME"]) / "fleet" / "t.secret"
    secret.mkdir(parents=True)  # a read of it fails, as an unreadable file's would
    proc = fleet(xdg, profile, "serve", timeout=30)
    assert proc.returncode == 3
    line = one_line(proc)
    assert "token secret" in line and str(secret) in line


def test_a_new_secret_is_full_length_and_private(tmp_path):
    secret = tmp_path / "s" / "t.secret"
    signer = TokenSigner(secret)
    token = signer.issue(7, MAC)
    assert len(secret.read_bytes()) == 32 and secret.stat().st_mode & 0o777 == 0o600
    assert TokenSigner(secret).verify(token, 7, MAC)
    assert [p.name for p in secret.parent.iterdir()] == ["t.secret"]


@pytest.mark.root
async def test_sightings_on_a_full_disk_are_one_log_line_and_recover(tmp_path, xdg, caplog):
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        profile = write_profile(tmp_path, overrides={"store": str(disk / "t.db"), "nodes": []})
        engine = await Engine.open(profile)
        try:
            other = sqlite3.connect(disk / "t.db")  # keeps the WAL index in place
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            filler = fill(disk)
            for i in range(3):  # three batches: each fails, one line in all
                engine.record_sighting(f"ac:1f:6b:00:01:0{i}", stage="firmware")
                await asyncio.sleep(0.4)
                task = engine._sightings._task
                assert task.done() and task.exception() is None
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage()
            filler.unlink()
            engine.record_sighting(MAC, stage="firmware")
            await asyncio.sleep(0.4)
            assert (await engine.machine(MAC)).state.value == "discovered"
            other.close()
        finally:
            await engine.close()


@pytest.mark.root
def test_a_store_on_a_read_only_mount_says_so_and_is_left_alone(tmp_path, xdg):
    folder = tmp_path / "s"
    folder.mkdir()
    profile = write_profile(tmp_path, overrides={"store": str(folder / "t.db")})
    assert fleet(xdg, profile, "machines").returncode == 0
    before = (folder / "t.db").read_bytes()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        proc = fleet(xdg, profile, "machines")
        assert proc.returncode == 3
        assert f"{folder} is on a read-only file system" in one_line(proc)
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    assert (folder / "t.db").read_bytes() == before


async def test_a_transaction_cancelled_while_it_waits_for_the_write_lock_leaves_none_open(
        tmp_path, xdg):
    """Another process holds the write lock; a transaction here waits in BEGIN and
    is cancelled (a stop). When the lock is free its BEGIN completes in the
    store's thread: the store must roll it back, not stay inside it."""
    profile = write_profile(tmp_path)
    engine = await Engine.open(profile)
    other = sqlite3.connect(engine.store.path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.ensure_future(engine.record(engine.event("test.one", "x", "one")))
        await asyncio.sleep(0.3)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        other.execute("COMMIT")
        await asyncio.sleep(0.3)
        await engine.record(engine.event("test.two", "x", "two"))
        kinds = [e.kind for e in await engine.events(10)]
        assert "test.two" in kinds and "test.one" not in kinds
    finally:
        other.close()
        await engine.close()
