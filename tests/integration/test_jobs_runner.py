"""The job runner against a real store and real processes: concurrency limits per
group, cancel killing a process group (checked in /proc), batched logs and
progress, failures, retry, recovery of jobs whose process died (a real
`fleet --headless build iso --wait` SIGKILLed mid-build)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.build.builders import plan
from fleet.build.cache import ArtifactCache
from fleet.build.request import normalize
from fleet.core.model import JobState
from fleet.engine import Engine
from fleet.errors import BadInput, UnknownTarget
from fleet.jobs.procs import group_members, pid_alive
from fleet.jobs.runner import JobFailed
from support.profiles import isolated_env

FLEET = str(Path(sys.executable).with_name("fleet"))


async def kinds_of(engine, job_id):
    return [e.kind for e in await engine.events(50, subject=str(job_id))]


async def test_concurrency_limit_per_group_is_respected(engine):
    active = {"build": 0, "exec": 0}
    peak = {"build": 0, "exec": 0}

    def handler(group):
        async def run(ctx, inputs):
            active[group] += 1
            peak[group] = max(peak[group], active[group])
            await asyncio.sleep(0.15)
            active[group] -= 1
            return {"n": inputs["n"]}
        return run

    engine.jobs.register("t-build", handler("build"), group="build")
    engine.jobs.register("t-exec", handler("exec"), group="exec")
    ids = [await engine.jobs.submit("t-build", {"n": i}) for i in range(6)]
    ids += [await engine.jobs.submit("t-exec", {"n": i}) for i in range(20)]
    jobs = [await engine.jobs.wait(i, timeout=20) for i in ids]
    assert all(j.state is JobState.SUCCEEDED for j in jobs)
    assert peak == {"build": 2, "exec": 16}
    assert [j.result["n"] for j in jobs[:6]] == list(range(6))
    assert await kinds_of(engine, ids[0]) == ["job.queued", "job.started", "job.succeeded"]


async def test_cancel_kills_the_process_group_and_records_cancelled(engine):
    contexts = {}

    async def sleeper(ctx, inputs):
        contexts[ctx.job_id] = ctx
        # a child and a grandchild in the job's process group
        await ctx.run(["sh", "-c", "sleep 100 & sleep 100; wait"])
        return {}

    engine.jobs.register("t-sleep", sleeper, group="build")
    job_id = await engine.jobs.submit("t-sleep", {})
    for _ in range(100):
        ctx = contexts.get(job_id)
        if ctx and ctx._groups and len(group_members(next(iter(ctx._groups)))) >= 3:
            break
        await asyncio.sleep(0.05)
    pgid = next(iter(contexts[job_id]._groups))
    members = group_members(pgid)
    assert len(members) >= 3  # sh + two sleeps
    job = await engine.jobs.cancel(job_id)
    assert job.state is JobState.CANCELLED and job.error == "cancelled"
    assert group_members(pgid) == []
    for pid in members:  # dead: gone from /proc or a zombie waiting for the reaper
        assert not pid_alive(pid)
    assert (await kinds_of(engine, job_id))[-1] == "job.cancelled"
    # cancelling again is a no-op; a finished job stays as it is
    assert (await engine.jobs.cancel(job_id)).state is JobState.CANCELLED


async def test_cancel_from_another_engine_reaches_the_owner(engine, profile_path):
    contexts = {}

    async def sleeper(ctx, inputs):
        contexts[ctx.job_id] = ctx
        await ctx.run(["sleep", "100"])
        return {}

    engine.jobs.register("t-sleep", sleeper, group="build")
    job_id = await engine.jobs.submit("t-sleep", {})
    while not (contexts.get(job_id) and contexts[job_id]._groups):
        await asyncio.sleep(0.05)
    pgid = next(iter(contexts[job_id]._groups))
    other = await Engine.open(profile_path)
    try:
        other.jobs.register("t-sleep", sleeper, group="build")
        job = await other.jobs.cancel(job_id)  # not its job: it writes the state
        assert job.state is JobState.CANCELLED
    finally:
        await other.close()
    done = await engine.jobs.wait(job_id, timeout=10)  # the owner noticed and killed
    assert done.state is JobState.CANCELLED
    assert group_members(pgid) == []
    assert (await kinds_of(engine, job_id)).count("job.cancelled") == 1


async def test_cancel_a_queued_job(engine):
    gate = asyncio.Event()

    async def waiter(ctx, inputs):
        await gate.wait()
        return {}

    engine.jobs.register("t-wait", waiter, group="solo")
    engine.jobs.runner.limits["solo"] = 1
    first = await engine.jobs.submit("t-wait", {})
    second = await engine.jobs.submit("t-wait", {})
    await asyncio.sleep(0.1)
    assert (await engine.jobs.get(second)).state is JobState.QUEUED
    assert (await engine.jobs.cancel(second)).state is JobState.CANCELLED
    gate.set()
    assert (await engine.jobs.wait(first, 5)).state is JobState.SUCCEEDED
    assert "job.started" not in await kinds_of(engine, second)


async def test_logs_and_progress_are_batched_and_ordered(engine):
    commits = []
    engine.store.on_commit(lambda: commits.append(1))

    async def chatty(ctx, inputs):
        for i in range(2000):
            ctx.log(f"line {i}")
            ctx.progress(i / 2000, f"step {i}")
            if i % 200 == 0:
                await asyncio.sleep(0.01)
        await ctx.run(["sh", "-c", "for i in 1 2 3; do echo out $i; echo err $i >&2; done"])
        ctx.progress(0.9, "almost")
        return {"ok": True}

    engine.jobs.register("t-chatty", chatty)
    job_id = await engine.jobs.submit("t-chatty", {})
    job = await engine.jobs.wait(job_id, 20)
    assert job.state is JobState.SUCCEEDED and job.progress == 1.0 and job.phase == "almost"
    lines = [line for _, _, line in await engine.jobs.logs(job_id)]
    assert lines[:2000] == [f"line {i}" for i in range(2000)]
    assert lines[2000].startswith("$ sh -c")
    assert sorted(lines[2001:]) == sorted(
        [f"out {i}" for i in (1, 2, 3)] + [f"err {i}" for i in (1, 2, 3)])
    assert len(commits) < 40  # 2000+ lines and progress updates, a few transactions


async def test_failures_are_recorded_with_the_reason(engine):
    async def fails(ctx, inputs):
        raise JobFailed("the disk is full")

    async def bad_tool(ctx, inputs):
        await ctx.run(["sh", "-c", "echo 'grub: no such module' >&2; exit 7"])
        return {}

    engine.jobs.register("t-fail", fails)
    engine.jobs.register("t-tool", bad_tool)
    a = await engine.jobs.wait(await engine.jobs.submit("t-fail", {}), 5)
    b = await engine.jobs.wait(await engine.jobs.submit("t-tool", {}), 5)
    assert a.state is JobState.FAILED and a.error == "the disk is full"
    assert b.state is JobState.FAILED
    assert b.error == "sh exited with status 7: grub: no such module"
    events = await engine.events(5, subject=str(a.id))
    assert events[-1].kind == "job.failed" and events[-1].severity.value == "error"
    with pytest.raises(UnknownTarget):
        await engine.jobs.get(99999)
    with pytest.raises(BadInput, match="unknown job kind"):
        await engine.jobs.submit("nope", {})


async def test_retry_makes_a_linked_job_with_the_same_inputs(engine):
    runs = []

    async def flaky(ctx, inputs):
        runs.append(inputs)
        if len(runs) == 1:
            raise JobFailed("first time fails")
        return {"x": inputs["x"]}

    engine.jobs.register("t-flaky", flaky)
    first = await engine.jobs.submit("t-flaky", {"x": 5})
    assert (await engine.jobs.wait(first, 5)).state is JobState.FAILED
    second = await engine.jobs.retry(first)
    job = await engine.jobs.wait(second, 5)
    assert job.state is JobState.SUCCEEDED and job.result == {"x": 5}
    assert job.inputs == {"x": 5, "_retry_of": first}
    assert runs[1] == {"x": 5, "_retry_of": first}
    queued = await engine.events(10, subject=str(second))
    assert queued[0].kind == "job.queued" and queued[0].data["retry_of"] == first


async def test_retry_of_an_unfinished_job_is_refused(engine):
    gate = asyncio.Event()

    async def waiter(ctx, inputs):
        await gate.wait()
        return {}

    engine.jobs.register("t-wait", waiter)
    job_id = await engine.jobs.submit("t-wait", {})
    with pytest.raises(BadInput, match="only a finished job"):
        await engine.jobs.retry(job_id)
    gate.set()
    await engine.jobs.wait(job_id, 5)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_jobs_of_a_dead_owner_become_interrupted(profile_path):
    dead = _dead_pid()
    eng = await Engine.open(profile_path)
    try:
        now = time.time()
        async with eng.store.transaction() as tx:
            running = await eng.store.jobs.create(tx, "iso", {"kind": "iso"}, now)
            await eng.store.jobs.update(tx, running, state=JobState.RUNNING, owner_pid=dead)
            queued = await eng.store.jobs.create(tx, "iso", {"kind": "iso"}, now)
            await eng.store.jobs.update(tx, queued, owner_pid=dead)
            alive = await eng.store.jobs.create(tx, "exec", {"cmd": "uptime"}, now)
            await eng.store.jobs.update(tx, alive, state=JobState.RUNNING, owner_pid=1)
    finally:
        await eng.close()
    eng = await Engine.open(profile_path)  # opening recovers at once
    try:
        for job_id in (running, queued):
            job = await eng.jobs.get(job_id)
            assert job.state is JobState.INTERRUPTED
            assert f"owner process {dead} is gone" in job.error
            assert (await kinds_of(eng, job_id))[-1] == "job.interrupted"
        # PID 1 is alive and started long before: an exec job of the access plane
        # recorded with JobRepo is listed and left alone
        other = await eng.jobs.get(alive)
        assert other.state is JobState.RUNNING and other.kind == "exec"
        assert alive in [j.id for j in await eng.jobs.list()]
        assert await eng.jobs.start() == []  # once per engine
    finally:
        await eng.close()


async def test_closing_the_engine_interrupts_its_running_jobs(profile_path):
    eng = await Engine.open(profile_path)

    async def sleeper(ctx, inputs):
        await ctx.run(["sleep", "100"])
        return {}

    eng.jobs.register("t-sleep", sleeper)
    job_id = await eng.jobs.submit("t-sleep", {})
    await asyncio.sleep(0.3)
    await eng.close()
    eng = await Engine.open(profile_path)
    try:
        job = await eng.jobs.get(job_id)
        assert job.state is JobState.INTERRUPTED
        assert "fleet stopped" in job.error
    finally:
        await eng.close()


def _job_row(db: Path, job_id: int | None = None):
    conn = sqlite3.connect(db, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        if job_id is None:
            return conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
        return conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        conn.close()


@pytest.mark.slow
async def test_sigkilled_build_is_interrupted_and_retry_succeeds(tmp_path, profile_path, xdg):
    """A real `fleet --headless build iso --wait` is SIGKILLed while its job runs
    (it waits on the artifact's lock, which the test holds): reopening the store
    shows the job interrupted, and `job retry` builds the ISO."""
    env = isolated_env(tmp_path)
    eng = await Engine.open(profile_path)
    try:
        req = normalize(eng, "iso", label="KILLED", distributor="rack1")
        aid, _ = plan(eng, req)
        cache = ArtifactCache(eng.paths.artifacts_dir)
    finally:
        await eng.close()
    db = profile_path.parent / "t.db"
    lock = cache.lock(aid)
    await lock.__aenter__()  # hold the artifact's lock: the build job blocks on it
    proc = subprocess.Popen([FLEET, "--headless", "-p", str(profile_path), "build", "iso",
                             "--label", "KILLED", "--distributor", "rack1", "--wait"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        row = None
        while time.monotonic() < deadline:
            row = _job_row(db) if db.exists() else None
            if row is not None and row["phase"] == "wait for the cache lock":
                break  # running, and its batched progress and log reached the store
            await asyncio.sleep(0.1)
        assert row is not None and row["state"] == "running", row and dict(row)
        assert row["phase"] == "wait for the cache lock"
        assert row["owner_pid"] == proc.pid
        job_id = row["id"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        await lock.__aexit__(None, None, None)
    assert proc.returncode == -signal.SIGKILL
    eng = await Engine.open(profile_path)
    try:
        assert (await eng.jobs.get(job_id)).state is JobState.INTERRUPTED  # at open
        job = await eng.jobs.get(job_id)
        assert job.state is JobState.INTERRUPTED
        assert f"owner process {proc.pid} is gone" in job.error
        assert (await kinds_of(eng, job_id))[-2:] == ["job.started", "job.interrupted"]
        logs = [line for _, _, line in await eng.jobs.logs(job_id)]
        assert logs[0] == f"artifact {aid}"
    finally:
        await eng.close()
    out = subprocess.run([FLEET, "--headless", "-p", str(profile_path), "--format", "json",
                          "job", "retry", str(job_id)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["id"] == aid and record["retry_of"] == job_id
    assert Path(record["path"]).is_file() and record["path"].endswith("KILLED.iso")
    retried = _job_row(db)
    assert retried["state"] == "succeeded" and retried["id"] > job_id
    assert json.loads(retried["inputs"])["_retry_of"] == job_id


async def test_a_worker_claims_unclaimed_jobs_and_sweeps_dead_owners(engine):
    async def quick(ctx, inputs):
        ctx.log(f"ran in {os.getpid()}")
        return {"v": inputs["v"]}

    engine.jobs.register("t-quick", quick)
    unclaimed = await engine.jobs.runner.submit("t-quick", {"v": 1}, claim=False)
    dead = _dead_pid()
    async with engine.store.transaction() as tx:
        orphan = await engine.store.jobs.create(tx, "t-quick", {"v": 2}, time.time())
        await engine.store.jobs.update(tx, orphan, state=JobState.RUNNING, owner_pid=dead)
    assert (await engine.jobs.get(unclaimed)).state is JobState.QUEUED
    worker = asyncio.ensure_future(engine.jobs.run_worker(poll=0.1))
    try:
        job = await engine.jobs.wait(unclaimed, timeout=10)
        assert job.state is JobState.SUCCEEDED and job.result == {"v": 1}
        assert (await engine.jobs.get(orphan)).state is JobState.INTERRUPTED
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert not await engine.jobs.claim(unclaimed)  # finished: nothing to claim


async def test_any_process_can_run_every_job_kind(engine):
    """`job retry` of an exec or post-boot job works in a plain CLI process, not only
    in the process that serves the boot services (it registered the kind before)."""
    kinds = set(engine.jobs.runner.kinds)
    assert {"exec", "post_boot", "ipxe", "grub", "syslinux", "iso", "wiper"} <= kinds
