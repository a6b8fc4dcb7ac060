"""Post-boot scripts: a deployment's `post_boot` run on the new node after it calls home.

    schedule(engine, node, deployment) -> job id | None   (from the call-home route)

Who runs them: the process that answered the call-home, i.e. the one serving
the boot services (`fleet --headless serve`, the console, the demo). The HTTP
route only *submits* a `post_boot` job to that process's job runner and
answers at once; the runner owns the task, its progress and log.

Once: a call-home token is good for one successful call-home per lease
(fleet.boot.callhome), so a lease gets one job. If fleet stops while it runs,
the job becomes `interrupted` at the next start and is not run again by itself
(a script may not be safe to repeat): `fleet --headless job retry ID` runs it
again, with the same inputs, in a process that registered the kind (one that
serves the boot services; `serve`'s worker picks retried jobs up).

What it does: waits for the node to accept SSH (an installer usually calls home
just before it reboots into the installed system), then runs the scripts one
after another, each uploaded and run through the access plane
(`engine.access.exec(nodes, script=path)`: the route, the pinned host keys and
the exec job and events are the access plane's). Each script gives an event:

    post_boot.finished  node, script, exit 0, duration_s
    post_boot.failed    node, script, exit (or None), error_kind, error, duration_s

The first failure ends the job (failed); later scripts may depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import logging
import time
from pathlib import Path

from fleet.core.model import Node, Severity
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

KIND = "post_boot"
WAIT_SECONDS = 900.0  # for the node's sshd: reboot after the install, POST, boot
RETRY_SECONDS = 5.0
SCRIPT_TIMEOUT = 1800.0


class PostBootFailed(FleetError):
    exit_code = 1

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result  # kept as the failed job's result


async def schedule(engine: "Engine", node: Node, deployment: str) -> int | None:
    """Submit the deployment's post-boot scripts for `node` (None when it has none)."""
    try:
        scripts = engine.profile.deployment(deployment).post_boot
    except KeyError:
        return None
    if not scripts:
        return None
    inputs = {"node": node.name, "deployment": deployment,
              "scripts": [str(p) for p in scripts],
              "wait_seconds": WAIT_SECONDS, "timeout": SCRIPT_TIMEOUT}
    job_id = await engine.jobs.submit(KIND, inputs)
    log.info("post-boot job %s for %s: %d script(s)", job_id, node.name, len(scripts))
    return job_id


def handler(engine: "Engine"):
    async def run(ctx, inputs: dict) -> dict:
        name = inputs["node"]
        scripts = [Path(p) for p in inputs["scripts"]]
        ctx.progress(0.0, f"waiting for {name} to accept SSH")
        await _wait_for_ssh(engine, ctx, name, float(inputs.get("wait_seconds", WAIT_SECONDS)))
        node = await engine.node(name)
        done: list[dict] = []
        for i, script in enumerate(scripts):
            ctx.check_cancelled()
            ctx.progress(i / len(scripts), f"{script.name} on {name}")
            started = time.monotonic()
            error_kind, error, status = "command-failed", None, None
            try:
                report = await engine.access.exec(
                    [node], script=script, timeout=float(inputs.get("timeout", SCRIPT_TIMEOUT)),
                    retries=1, on_line=lambda n, stream, line: ctx.log(f"{n} {stream}: {line}"))
                r = report.results[0]
                error_kind, error, status = r.error_kind, r.error, r.exit_status
            except FleetError as err:  # e.g. the script file is gone since the profile loaded
                error = str(err)
            duration = round(time.monotonic() - started, 3)
            record = {"script": str(script), "exit": status, "error_kind": error_kind,
                      "duration_s": duration}
            done.append(record)
            ok = error_kind == "ok"
            ctx.log(f"{script.name} on {name}: {error_kind}"
                    f"{'' if status is None else f' exit {status}'} in {duration:.2f}s")
            await engine.record(engine.event(
                "post_boot.finished" if ok else "post_boot.failed", name,
                f"post-boot {script.name} on {name}: "
                + (f"ok in {duration:.1f}s" if ok else f"{error_kind}: {error}"),
                severity=Severity.INFO if ok else Severity.WARNING, node=name,
                script=str(script), exit=status, error_kind=error_kind, error=error,
                duration_s=duration, job=ctx.job_id))
            if not ok:
                raise PostBootFailed(f"{script.name} on {name}: {error_kind}: {error}",
                                     {"node": name, "scripts": done})
        return {"node": name, "scripts": done}

    return run


async def _wait_for_ssh(engine: "Engine", ctx, name: str, wait: float) -> None:
    """Until a pooled connection to the node opens (only Unreachable is retried:
    a wrong host key or a refused login must not be retried into)."""
    from fleet.access.pool import AccessError, Unreachable
    from fleet.access.routes import RouteKind

    route = engine.access.route(await engine.node(name))
    if route.kind is RouteKind.UNREACHABLE:  # waiting would not change that
        raise FleetError(f"no route to {name}: {route.reason}")
    deadline = time.monotonic() + wait
    while True:
        ctx.check_cancelled()
        try:
            await engine.access.connection(name)
            return
        except AccessError as err:
            if not isinstance(err, Unreachable) or time.monotonic() + RETRY_SECONDS > deadline:
                raise FleetError(f"{name} does not accept SSH: {err.kind}: {err}") from None
            ctx.progress(0.0, f"waiting for {name} to accept SSH ({err.kind})")
        await asyncio.sleep(RETRY_SECONDS)
