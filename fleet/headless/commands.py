"""What each headless command does: ask the engine, print records."""

from __future__ import annotations

import time
from collections import Counter

from fleet.engine import Engine
from fleet.errors import BadInput
from fleet import records as rec
from fleet.headless.output import Output, warn_stale


async def info(engine: Engine, args, out: Output) -> int:
    data = _with_log_file(engine.info(), str(engine.paths.log_file))
    if out.format == "table":
        width = max(len(k) for k in data)
        for key, value in data.items():
            out.text(f"{key.ljust(width)}  {value}")
    else:
        out.record(data, "")
    return 0


def _with_log_file(data: dict, log_file: str) -> dict:
    """`log_file` listed right after `logs_dir`."""
    out: dict = {}
    for key, value in data.items():
        out[key] = value
        if key == "logs_dir":
            out["log_file"] = log_file
    out.setdefault("log_file", log_file)
    return out


async def machines(engine: Engine, args, out: Output) -> int:
    now = time.time()
    rows = [rec.machine(m, now) for m in await engine.machines(args.state)]
    out.records(rows, rec.MACHINE_COLUMNS, empty="no machines seen yet")
    await warn_stale(engine, out)
    return 0



async def lease(engine: Engine, args, out: Output) -> int:
    m = await engine.lease(args.mac, args.deployment, args.hostname, args.address)
    where = f" at {m.lease.address}" if m.lease.address else ""
    out.record(rec.machine(m), f"{m.mac} leased to {m.lease.deployment} as "
                               f"{m.lease.hostname}{where}; its next boot installs")
    return 0


async def release(engine: Engine, args, out: Output) -> int:
    outcome = await engine.release_outcome(args.mac, wipe=args.wipe)
    row = {**rec.machine(outcome.machine), "changed": outcome.changed,
           "retired": outcome.retired, "message": outcome.message}
    out.record(row, outcome.message)
    return 0


async def events(engine: Engine, args, out: Output) -> int:
    """The event log; with --follow, a stream of JSON lines whatever --format
    says (what `serve` prints too), until SIGINT/SIGTERM: exit 130, as every
    follow that a signal ends."""
    if args.limit < 0:
        raise BadInput("--limit must be 0 or more")
    past = await engine.events(args.limit, args.subject) if args.limit else []

    def show(e):
        if out.format == "table":
            out.text(rec.event_line(e))
        else:
            out.record_line(rec.event(e))

    if not args.follow:
        if out.format == "json":
            out.records([rec.event(e) for e in past], [])
        else:
            for e in past:
                show(e)
        return 0
    for e in past:
        out.record_line(rec.event(e))
    after = past[-1].id if past else await engine.last_event_id()
    sub = engine.follow(after)
    try:
        async for e in sub:
            if args.subject and e.subject != args.subject:
                continue
            out.record_line(rec.event(e))
    finally:
        sub.close()
    return 0


async def distributors(engine: Engine, args, out: Output) -> int:
    from fleet.boot.assigned import index

    seen = Counter(m.distributor for m in await engine.machines())
    artifacts = {a.id: a for a in await engine.artifacts()}
    rows = []
    for d in await engine.distributors():
        row = rec.distributor(d, seen.get(d.name, 0))
        # the names its TFTP serves (HTTP: /artifacts/<name>)
        row["served"] = sorted(index(artifacts[i] for i in d.artifacts if i in artifacts))
        rows.append(row)
    out.records(rows, [*rec.DISTRIBUTOR_COLUMNS, ("served", "serves")],
                empty="no distributors in this profile")
    return 0


async def distributor(engine: Engine, args, out: Output) -> int:
    d = await engine.switch_distributor(args.name, args.switch == "on")
    out.record(rec.distributor(d), f"distributor {d.name} is {'on' if d.enabled else 'off'}")
    return 0


CORE_HANDLERS = {
    "info": info,
    "machines": machines,
    "lease": lease,
    "release": release,
    "events": events,
    "distributors": distributors,
    "distributor": distributor,
}


def _handlers() -> dict:
    """The core commands above, then each area's commands."""
    from fleet.headless import cmd_access, cmd_agent, cmd_boot, cmd_jobs, cmd_sites

    merged = dict(CORE_HANDLERS)
    for module in (cmd_boot, cmd_access, cmd_jobs, cmd_agent, cmd_sites):
        merged.update(module.HANDLERS)
    return merged


HANDLERS = _handlers()
