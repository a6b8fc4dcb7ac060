"""Headless commands of the access area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).

    routes [NODE...]     node, route kind, target, via (failover jumps), reason
    exec ...             see `fleet --headless exec --help`
    nodes [--select]     the core listing plus each node's route
    trust list|forget    pinned host keys; forget a node's or jump's after a reinstall
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.access.routes import Route
from fleet import records as rec
from fleet.headless.output import Output, warn_stale

if TYPE_CHECKING:
    from fleet.engine import Engine

ROUTE_COLUMNS = [("node", "node"), ("kind", "route"), ("target", "target"),
                 ("_via", "via"), ("reason", "reason")]


def route_record(r: Route) -> dict[str, Any]:
    return {"node": r.node, "kind": r.kind.value, "target": r.target, "port": r.port,
            "via": list(r.chain), "alternatives": [list(c) for c in r.alternatives],
            "reason": r.reason, "_via": r.via}


async def routes(engine: "Engine", args, out: Output) -> int:
    pairs = await engine.access.routes(args.nodes or None)
    out.records([route_record(r) for _, r in pairs], ROUTE_COLUMNS, empty="no nodes")
    return 0


async def nodes(engine: "Engine", args, out: Output) -> int:
    api = engine.access
    rows = []
    for n in await engine.nodes(args.select):
        r = api.route(n)
        rows.append(rec.node(n) | {"route": r.kind.value, "route_target": r.target,
                                   "via": list(r.chain), "_via": r.via})
    columns = rec.NODE_COLUMNS[:-2] + [("route", "route"), ("_via", "via")] + \
        rec.NODE_COLUMNS[-2:]
    out.records(rows, columns, empty="no nodes")
    await warn_stale(engine, out)
    return 0


async def exec_(engine: "Engine", args, out: Output) -> int:
    api = engine.access
    argv = list(getattr(args, "argv", []) or [])
    script = Path(args.script) if args.script else None
    command = "" if script else " ".join(argv)  # joined like ssh does: the remote shell parses
    targets = await api.targets(args.targets, args.select)
    width = max(len(n.name) for n in targets)
    fmt = out.format

    def on_line(node: str, stream: str, line: str) -> None:
        if fmt == "table":
            mark = "|" if stream == "stdout" else "!"
            out.text(f"{node.ljust(width)} {mark} {line}")
        elif fmt == "jsonl":
            out.record_line({"type": "output", "node": node, "stream": stream, "line": line})

    def on_result(r) -> None:
        if fmt == "jsonl":
            out.record_line({"type": "result", **r.record()})

    report = await api.exec(targets, command, parallel=args.parallel, timeout=args.timeout,
                            retries=args.retries, script=script,
                            script_args=argv if script else (),
                            on_line=on_line if fmt != "json" else None, on_result=on_result,
                            keep_output=fmt == "json")
    if fmt == "json":
        out.text(json.dumps({"command": report.command,
                             "results": [r.record(with_output=True) for r in report.results],
                             "summary": report.summary()}, indent=2))
    elif fmt == "jsonl":
        out.record_line({"type": "summary", "command": report.command, **report.summary()})
    else:
        failed = report.failed
        if failed:
            out.text("")
            rows = [{"node": r.node, "kind": r.error_kind, "exit": r.exit_status,
                     "time": f"{r.duration_s:.2f}s", "via": r.via, "error": r.error}
                    for r in failed]
            out.records(rows, [("node", "node"), ("kind", "result"), ("exit", "exit"),
                               ("time", "time"), ("via", "via"), ("error", "error")])
        out.text(report.summary_text())
    if report.cancelled:
        done = sum(1 for r in report.results if r.error_kind != "cancelled")
        out.error(f"fleet: exec job {report.job_id} was cancelled; {done} of "
                  f"{len(report.results)} node(s) had finished; the others' commands were "
                  "stopped")
    return 1 if report.failed else 0


# -- shell, forward, check, link ------------------------------------------------------

def _fail(out: Output, err) -> int:
    """A node we could not reach: one line on stderr, exit 1 (a target failed)."""
    kind = getattr(err, "kind", None)
    out.error(f"fleet: {kind + ': ' if kind else ''}{err}")
    return 1


async def shell(engine: "Engine", args, out: Output) -> int:
    """The remote shell's exit status; 1 if the node could not be reached; 255 if the
    connection was lost mid-session."""
    from fleet.access.pool import AccessError
    from fleet.access.shell import run_terminal_shell

    import asyncssh

    try:
        return await run_terminal_shell(engine.access, args.node)
    except (AccessError, asyncssh.Error) as err:
        return _fail(out, err)


async def forward(engine: "Engine", args, out: Output) -> int:
    import asyncio

    from fleet.access.forward import wait_lost
    from fleet.access.pool import AccessError

    api = engine.access
    try:
        fwd = await api.forward(args.node, args.ports)
    except AccessError as err:
        return _fail(out, err)
    data = fwd.record()
    out.record({"type": "listening", **data},
               fwd.text().replace("forward ", "forwarding ", 1)
               + (f" (via {fwd.via})" if fwd.via else "") + "; Ctrl-C stops")
    code = 0
    try:
        await wait_lost(fwd)
        code = 1
        out.error(f"fleet: the connection to {args.node} was lost; forward closed")
    except asyncio.CancelledError:
        code = 0
    finally:
        await asyncio.shield(fwd.aclose())  # forward.closed (fleet.access.forward)
    return code


async def check(engine: "Engine", args, out: Output) -> int:
    api = engine.access
    if args.http:
        r = await api.http_check(args.node, args.http, host=args.http_host,
                                 timeout=args.timeout)
        if r["status"] is not None:
            text = (f"{r['node']}: {r['url']} -> HTTP {r['status']} in {r['latency_ms']} ms "
                    f"({r['bytes']} bytes" + (f", via {r['via']}" if r["via"] else "") + ")")
        else:
            text = f"{r['node']}: {r['url']} failed: {r['error']}"
        out.record(r, text)
        return 0 if r["ok"] else 1
    rec = await api.check(args.node)
    text = (f"{args.node}: ssh answers in {rec['latency_ms']} ms" if rec["ok"]
            else f"{args.node}: {rec['error']}")
    out.record(rec, text)
    return 0 if rec["ok"] else 1


async def link(engine: "Engine", args, out: Output) -> int:
    import asyncssh

    from fleet.access.linkcheck import _summary
    from fleet.access.pool import AccessError

    try:
        r = await engine.access.link_check(args.a, args.b, iperf=args.iperf, count=args.count,
                                           seconds=args.seconds, port=args.port)
    except (AccessError, asyncssh.Error, TimeoutError) as err:
        return _fail(out, err)
    out.record(r, _summary(r))
    return 0 if r["ok"] else 1


PIN_COLUMNS = [("name", "name"), ("kind", "kind"), ("key_type", "type"),
               ("fingerprint", "fingerprint"), ("source", "source")]


async def trust(engine: "Engine", args, out: Output) -> int:
    from fleet.access.trust import forget_pins, pinned_keys

    if args.trust_command == "list":
        out.records(await pinned_keys(engine), PIN_COLUMNS, empty="no pinned host keys")
        return 0
    keys = await forget_pins(engine, args.name)
    if keys:
        text = (f"forgot {len(keys)} pinned host key{'s' if len(keys) != 1 else ''} of "
                f"{args.name}: " + ", ".join(f"{k.key_type} {k.fingerprint}" for k in keys))
    else:
        text = f"{args.name} has no pinned host keys; nothing changed"
    out.record({"name": args.name, "forgotten": [k.fingerprint for k in keys]}, text)
    return 0


HANDLERS: dict = {
    "trust": trust,
    "routes": routes,
    "exec": exec_,
    "nodes": nodes,
    "shell": shell,
    "forward": forward,
    "check": check,
    "link": link,
}
