"""Headless commands of the jobs area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).

    build ipxe|grub|syslinux|iso|wiper [--label L] [--distributor NAME] [--script FILE]
          [--chain-url URL] [--ipxe-dir DIR] [--ipxe-src DIR [--target T]...]
          [--grub-cfg FILE] [--wiper-root DIR] [--wiper-module M]... [--wait/--no-wait]
    jobs [--follow] [--state S] [--limit N]
    job cancel ID | job log ID [--follow] | job retry ID [--no-wait] | job run ID
    artifacts

Exit codes: 0 ok; 1 the build/job failed (or was cancelled); 2 bad input
(unknown job, distributor, bad label/script); 3 a missing tool, named with its
Debian package ("xorriso not found: apt-get install xorriso").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from fleet.core.model import Artifact, Job, JobState
from fleet.errors import BadInput, UnknownTarget
from fleet import records as rec
from fleet.headless.output import Output, warn_stale
from fleet.records import iso

if TYPE_CHECKING:
    from fleet.engine import Engine

ARTIFACT_COLUMNS = [("id", "id"), ("kind", "kind"), ("name", "name"), ("size", "size"),
                    ("version", "version"), ("sha256", "sha256"), ("path", "path")]


def artifact_record(a: Artifact, **extra) -> dict:
    return {"id": a.id, "kind": a.kind, "name": a.name, "path": a.path, "sha256": a.sha256,
            "size": a.size, "version": a.version, "created_at": iso(a.created_at), **extra}


def _read(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{what} {path}: {err}") from None


def _artifact_text(a: Artifact, how: str) -> str:
    return (f"{a.kind} artifact {a.name} {how}\n"
            f"id      {a.id}\npath    {a.path}\nsha256  {a.sha256}")


async def build(engine: "Engine", args, out: Output) -> int:
    options = dict(label=args.label, distributor=args.distributor,
                   script=_read(args.script, "--script"), chain_url=args.chain_url,
                   ipxe_dir=args.ipxe_dir, ipxe_src=args.ipxe_src,
                   ipxe_targets=args.ipxe_targets, grub_cfg=_read(args.grub_cfg, "--grub-cfg"),
                   wiper_root=args.wiper_root, wiper_modules=args.wiper_modules)
    started = time.monotonic()
    outcome = await engine.builds.build(args.what, wait=args.wait, claim=args.wait, **options)
    if outcome.artifact is None:  # --no-wait and not cached: hand it to a worker
        _spawn_worker(engine, outcome.job_id)
        out.record({"job": outcome.job_id, "state": "queued", "artifact": None,
                    "cached": False},
                   f"job {outcome.job_id} queued; follow it with `fleet --headless jobs "
                   f"--follow` or `job log {outcome.job_id} --follow`")
        return 0
    a = outcome.artifact
    took = time.monotonic() - started
    how = ("from the cache" if outcome.cached
           else f"built by job {outcome.job_id} in {took:.1f}s")
    out.record(artifact_record(a, cached=outcome.cached, job=outcome.job_id), _artifact_text(a, how))
    return 0


def _spawn_worker(engine: "Engine", job_id: int) -> None:
    """A detached `fleet --headless job run ID` that claims and runs the job."""
    argv = [sys.executable, "-m", "fleet", "--headless", "--profile",
            str(engine.profile.path), "job", "run", str(job_id)]
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))


async def artifacts(engine: "Engine", args, out: Output) -> int:
    assigned: dict[str, list[str]] = {}
    for d in await engine.distributors():
        for aid in d.artifacts:
            assigned.setdefault(aid, []).append(d.name)
    rows = [artifact_record(a, distributors=assigned.get(a.id, []))
            for a in await engine.builds.artifacts()]
    out.records(rows, ARTIFACT_COLUMNS, empty="no artifacts")
    return 0


def _job_row(j: Job, now: float | None = None) -> dict:
    row = rec.job(j, now)
    retry_of = j.inputs.get("_retry_of")
    row["retry_of"] = retry_of
    return row


async def jobs(engine: "Engine", args, out: Output) -> int:
    if args.limit < 1:
        raise BadInput("--limit must be 1 or more")
    try:
        states = [JobState(s) for s in args.state] if args.state else None
    except ValueError:
        raise BadInput(f"unknown state in {args.state}; one of: "
                       f"{', '.join(s.value for s in JobState)}") from None
    listed = await engine.jobs.list(states, args.limit)
    rows = [_job_row(j) for j in reversed(listed)]
    if not args.follow:
        if engine.remote is not None:  # the remote sites' jobs, as last snapshotted
            wanted = {s.value for s in states} if states else None
            rows += [{**r, "site": site, "_ref": f"{site}:{r['id']}"}
                     for site, r in await engine.remote.jobs()
                     if wanted is None or r.get("state") in wanted]
            columns = [("_ref", "id"), *rec.JOB_COLUMNS[1:]]
            out.records(rows, columns, empty="no jobs")
            await warn_stale(engine, out)
            return 0
        out.records(rows, rec.JOB_COLUMNS, empty="no jobs")
        return 0
    # follow: the current list, then one line per change (state, progress, phase)
    seen: dict[int, tuple] = {}

    def show(j: Job) -> None:
        row = _job_row(j)
        if out.format == "table":
            out.text(f"job {j.id:<5} {j.kind:<9} {j.state.value:<11} "
                     f"{int(j.progress * 100):>3}%  {j.phase}"
                     + (f"  error: {j.error}" if j.error else ""))
        else:
            out.record_line(row)

    for j in reversed(listed):
        seen[j.id] = (j.state, round(j.progress, 2), j.phase)
        show(j)
    while True:
        await asyncio.sleep(0.3)
        for j in reversed(await engine.jobs.list(states, args.limit)):
            sig = (j.state, round(j.progress, 2), j.phase)
            if seen.get(j.id) != sig:
                seen[j.id] = sig
                show(j)


async def job(engine: "Engine", args, out: Output) -> int:
    action = args.job_command
    site, args.id = args.id
    if site is not None:
        return await _remote_job(engine, action, site, args.id, out)
    if action == "cancel":
        before = await engine.jobs.get(args.id)
        j = await engine.jobs.cancel(args.id)
        if before.state.finished:
            text = f"job {j.id} had already {j.state.value}; nothing to cancel"
        else:
            text = f"job {j.id} {j.state.value}"
        out.record(_job_row(j), text)
        return 0
    if action == "log":
        return await _log(engine, args, out)
    if action == "retry":
        new_id = await engine.jobs.retry(args.id, claim=args.wait)
        if not args.wait:  # a background worker runs it, as with build --no-wait
            _spawn_worker(engine, new_id)
            j = await engine.jobs.get(new_id)
            out.record(_job_row(j), f"job {new_id} retries job {args.id}; queued")
            return 0
        return await _report(engine, out, new_id, f"job {new_id} (retry of {args.id})")
    if action == "run":
        if not await engine.jobs.claim(args.id):
            j = await engine.jobs.get(args.id)
            raise BadInput(f"job {args.id} is {j.state.value} and owned by another process")
        return await _report(engine, out, args.id, f"job {args.id}")
    raise BadInput(f"unknown job action {action!r}")


async def _remote_job(engine: "Engine", action: str, site: str, job_id: int,
                      out: Output) -> int:
    """cancel or retry a remote site's job, at its site (its agent runs it there)."""
    if engine.remote is None or site not in engine.remote.sites:
        raise UnknownTarget(f"unknown site {site!r}: no remote site of this profile has "
                            "that name")
    if action not in ("cancel", "retry"):
        raise BadInput(f"job {action} works on this process's jobs; for site {site}'s, "
                       f"run it on its host")
    result = await engine.remote.job_command(site, f"job_{action}", job_id)
    row = {**result["job"], "site": site}
    if action == "cancel":
        text = (f"job {site}:{job_id} {row['state']}" if result.get("changed", True)
                else f"job {site}:{job_id} had already {row['state']}; nothing to cancel")
    else:
        text = f"job {site}:{row['id']} retries job {site}:{job_id} at site {site}; queued"
    out.record(row, text)
    return 0


async def _report(engine: "Engine", out: Output, job_id: int, what: str) -> int:
    j = await engine.jobs.wait(job_id)
    row = _job_row(j)
    if j.state is JobState.SUCCEEDED:
        result = j.result or {}
        if "artifact" in result:
            a = await engine.builds.artifact(result["artifact"])
            out.record({**artifact_record(a, cached=False, job=job_id), "retry_of":
                        j.inputs.get("_retry_of")}, _artifact_text(a, f"built by {what}"))
        else:
            out.record(row, f"{what} succeeded")
        return 0
    out.record(row, f"{what} {j.state.value}: {j.error or ''}".rstrip(": "))
    return 1


async def _log(engine: "Engine", args, out: Output) -> int:
    after = 0

    def show(lines) -> None:
        for seq, ts, line in lines:
            if out.format == "table":
                out.text(line)
            else:
                out.record_line({"job": args.id, "seq": seq, "ts": iso(ts), "line": line})

    lines = await engine.jobs.logs(args.id)
    if not args.follow and out.format == "json":
        out.records([{"job": args.id, "seq": s, "ts": iso(t), "line": ln}
                     for s, t, ln in lines], [])
        return 0
    show(lines)
    if lines:
        after = lines[-1][0]
    if not args.follow:
        return 0
    while True:
        j = await engine.jobs.get(args.id)
        lines = await engine.jobs.logs(args.id, after)
        show(lines)
        if lines:
            after = lines[-1][0]
        if j.state.finished:
            return 0 if j.state is JobState.SUCCEEDED else 1
        await asyncio.sleep(0.3)


HANDLERS: dict = {"build": build, "artifacts": artifacts, "jobs": jobs, "job": job}
