"""Headless commands of the access area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).

    routes [NODE...]     node, route kind, target, via (failover jumps), reason
    exec ...             see `fleet --headless exec --help`
    nodes [--select]     the core listing plus each node's route
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.access.routes import Route
from fleet.headless import records as rec
from fleet.headless.output import Output

ROUTE_COLUMNS = [("node", "node"), ("kind", "route"), ("target", "target"),
                 ("_via", "via"), ("reason", "reason")]


def route_record(r: Route) -> dict[str, Any]:
    return {"node": r.node, "kind": r.kind.value, "target": r.target, "port": r.port,
            "via": list(r.chain), "alternatives": [list(c) for c in r.alternatives],
            "reason": r.reason, "_via": r.via}


async def routes(engine, args, out: Output) -> int:
    pairs = await engine.access.routes(args.nodes or None)
    out.records([route_record(r) for _, r in pairs], ROUTE_COLUMNS, empty="no nodes")
    return 0


async def nodes(engine, args, out: Output) -> int:
    api = engine.access
    rows = []
    for n in await engine.nodes(args.select):
        r = api.route(n)
        rows.append(rec.node(n) | {"route": r.kind.value, "route_target": r.target,
                                   "via": list(r.chain), "_via": r.via})
    columns = rec.NODE_COLUMNS[:-2] + [("route", "route"), ("_via", "via")] + \
        rec.NODE_COLUMNS[-2:]
    out.records(rows, columns, empty="no nodes")
    return 0


async def exec_(engine, args, out: Output) -> int:
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
    return 1 if report.failed else 0


HANDLERS: dict = {
    "routes": routes,
    "exec": exec_,
    "nodes": nodes,
}
