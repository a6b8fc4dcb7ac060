"""Fleet exec: one command (or an uploaded script) on many nodes, in parallel.

Each node gets a result with `error_kind`:

    ok              exit status 0
    command-failed  it ran and exited non-zero (or was killed by a signal)
    timeout         it ran longer than the per-node `timeout` (closed, then reported)
    unreachable     no route, the jump or node did not answer within
                    connect_timeout, the connection was refused or lost
    auth            the node refused the operator's key
    host-key        the node's host key is unknown (strict) or CHANGED

`timeout` bounds the command itself; connecting is bounded by the profile's
`connect_timeout` per step. A node whose pooled connection died under it (its
jump went down) is retried `retries` times (default 1), through the site's next
jump if the first is down: commands run by fan-out should be idempotent, since
a command cut off with its connection may or may not have run.

Cancelling a run (Ctrl-C, task.cancel()) or hitting `timeout` asks sshd to KILL
the command (a "signal" channel request) and closes its channel. OpenSSH 9.2
refuses signals in root sessions ("session signalling requires privilege
separation"): as root, a command that never writes outlives its channel, just
as with `ssh host cmd` without -t.

Each run is a job (kind "exec") with a log line per node result and events
`exec.started` / `exec.finished` (who, which nodes, the command verbatim, exit
codes).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import asyncssh

from fleet.access.pool import AccessError
from fleet.core.model import JobState, Reachability, Severity

if TYPE_CHECKING:
    from fleet.access.api import AccessAPI
    from fleet.core.model import Node

ERROR_KINDS = ("ok", "command-failed", "timeout", "unreachable", "auth", "host-key")

LineSink = Callable[[str, str, str], None]  # node, stream, line


@dataclass
class NodeResult:
    node: str
    exit_status: int | None
    duration_s: float
    error_kind: str  # see ERROR_KINDS
    error: str | None = None
    route: str | None = None  # route kind
    via: str | None = None  # the jump used
    attempts: int = 1
    stdout: list[str] = field(default_factory=list, repr=False)
    stderr: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error_kind == "ok"

    def record(self, with_output: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_output:
            d.pop("stdout")
            d.pop("stderr")
        return d


@dataclass
class ExecReport:
    job_id: int | None
    command: str
    results: list[NodeResult]
    duration_s: float

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.results if not r.ok]

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ERROR_KINDS}
        for r in self.results:
            out[r.error_kind] += 1
        return out

    def summary(self) -> dict[str, Any]:
        c = self.counts()
        return {"nodes": len(self.results), "ok": c["ok"], "failed": len(self.failed),
                "by_kind": {k: v for k, v in c.items() if v}, "duration_s": self.duration_s,
                "job": self.job_id}

    def summary_text(self) -> str:
        c = self.counts()
        bad = ", ".join(f"{v} {k}" for k, v in c.items() if v and k != "ok")
        text = f"{len(self.results)} node(s): {c['ok']} ok"
        if bad:
            text += f", {len(self.failed)} failed ({bad})"
        text += f" in {self.duration_s:.2f}s"
        if self.job_id is not None:
            text += f"; job {self.job_id}"
        return text


def operator_name() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER") or getpass.getuser()


class _JobRecorder:
    """Job progress and per-node log lines, written in small batches."""

    def __init__(self, engine, job_id: int, total: int, interval: float = 0.3):
        self.engine = engine
        self.job_id = job_id
        self.total = total
        self.done = 0
        self.lines: list[tuple[float, str]] = []
        self.interval = interval
        self._task: asyncio.Task | None = None

    def add(self, line: str) -> None:
        self.done += 1
        self.lines.append((time.time(), line))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()

    async def flush(self) -> None:
        lines, self.lines = self.lines, []
        if not lines:
            return
        store = self.engine.store
        async with store.transaction() as tx:
            for ts, line in lines:
                await store.jobs.log(tx, self.job_id, ts, line)
            await store.jobs.update(tx, self.job_id, progress=self.done / max(1, self.total),
                                    phase=f"{self.done}/{self.total} nodes")

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.flush()


async def run_exec(api: "AccessAPI", nodes: Sequence["Node"], command: str, *,
                   parallel: int = 32, timeout: float = 60.0, retries: int = 1,
                   script: Path | None = None, script_args: Sequence[str] = (),
                   on_line: LineSink | None = None,
                   on_result: Callable[[NodeResult], None] | None = None,
                   keep_output: bool = False, record: bool = True) -> ExecReport:
    engine = api.engine
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    script_bytes = None
    if script is not None:
        script_bytes = Path(script).read_bytes()
        shown = f"[script {script}] " + " ".join(shlex.quote(a) for a in script_args)
    else:
        shown = command
    names = [n.name for n in nodes]
    who = operator_name()
    t0 = time.monotonic()
    job_id = None
    recorder = None
    if record:
        now = engine.clock()
        inputs = {"command": shown, "nodes": names, "parallel": parallel, "timeout": timeout,
                  "who": who}
        store = engine.store
        async with store.transaction() as tx:
            job_id = await store.jobs.create(tx, "exec", inputs, now)
            await store.jobs.update(tx, job_id, state=JobState.RUNNING, started_at=now,
                                    owner_pid=os.getpid(), phase=f"0/{len(names)} nodes")
            await store.events.append(tx, [engine.event(
                "exec.started", str(job_id),
                f"{who} runs {shown!r} on {len(names)} node(s)", job=job_id, who=who,
                nodes=names, command=shown, parallel=parallel, timeout=timeout)])
        recorder = _JobRecorder(engine, job_id, len(names))

    sem = asyncio.Semaphore(parallel)
    results: dict[str, NodeResult] = {}

    async def one(node: "Node") -> None:
        async with sem:
            r = await _run_node(api, node, command, timeout, retries, script_bytes,
                                script_args, on_line, keep_output)
        results[node.name] = r
        if recorder is not None:
            recorder.add(_log_line(r))
        if on_result is not None:
            on_result(r)

    try:
        await asyncio.gather(*(one(n) for n in nodes))
    finally:
        ordered = [results[n] for n in names if n in results]
        report = ExecReport(job_id, shown, ordered, round(time.monotonic() - t0, 3))
        if record:
            await recorder.close()
            await _finish(engine, report, who, names, len(ordered) == len(names))
    return report


def _log_line(r: NodeResult) -> str:
    text = f"{r.node}: {r.error_kind}"
    if r.exit_status is not None:
        text += f" exit {r.exit_status}"
    text += f" in {r.duration_s:.2f}s"
    if r.error:
        text += f": {r.error}"
    return text


async def _finish(engine, report: ExecReport, who: str, names: list[str],
                  complete: bool) -> None:
    now = engine.clock()
    failed = report.failed
    state = (JobState.SUCCEEDED if complete and not failed else
             JobState.FAILED if complete else JobState.CANCELLED)
    exit_codes = {r.node: r.exit_status for r in report.results}
    summary = report.summary()
    store = engine.store
    async with store.transaction() as tx:
        await store.jobs.update(tx, report.job_id, state=state, finished_at=now, progress=1.0,
                                phase=f"{len(report.results)}/{len(names)} nodes",
                                result={**summary, "exit_codes": exit_codes},
                                error=None if not failed else report.summary_text())
        for r in report.results:
            if r.error_kind in ("ok", "command-failed", "timeout"):
                await store.nodes.set_reachability(tx, r.node, Reachability.REACHABLE, now)
            else:
                await store.nodes.set_reachability(tx, r.node, Reachability.UNREACHABLE, now,
                                                   r.error)
        await store.events.append(tx, [engine.event(
            "exec.finished", str(report.job_id),
            f"{report.command!r}: {report.summary_text()}",
            severity=Severity.INFO if not failed else Severity.WARNING,
            job=report.job_id, who=who, nodes=names, command=report.command,
            exit_codes=exit_codes, failed=[r.node for r in failed],
            by_kind=summary["by_kind"], duration_s=report.duration_s, state=state.value)])


async def _run_node(api: "AccessAPI", node: "Node", command: str, timeout: float,
                    retries: int, script: bytes | None, script_args: Sequence[str],
                    on_line: LineSink | None, keep_output: bool) -> NodeResult:
    t0 = time.monotonic()
    route = api.route(node)
    attempts = 0
    result = NodeResult(node.name, None, 0.0, "unreachable", route=route.kind.value)
    while True:
        attempts += 1
        result.attempts = attempts
        try:
            await _attempt(api, node, route, command, timeout, script, script_args,
                           on_line, keep_output, result)
        except AccessError as err:
            result.error_kind, result.error = err.kind, str(err)
            if err.lost and attempts <= retries:
                continue
        except (asyncssh.Error, OSError) as err:
            result.error_kind = "command-failed"
            result.error = f"{type(err).__name__}: {getattr(err, 'reason', '') or err}"
        break
    result.duration_s = round(time.monotonic() - t0, 3)
    return result


async def _attempt(api, node, route, command, timeout, script, script_args, on_line,
                   keep_output, result: NodeResult) -> None:
    async with api.pool.session(node, route) as link:
        result.via = link.via
        conn = link.conn
        try:
            if script is not None:
                command = await _upload(conn, script, script_args)
            await _run(conn, node.name, command, timeout, on_line, keep_output, result)
        except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost,
                asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as err:
            link.lost = link.lost or conn.is_closed()
            reason = getattr(err, "reason", None) or str(err) or type(err).__name__
            lost = not link.alive()
            where = f" (via {link.via})" if link.via else ""
            raise AccessError("unreachable", f"connection lost{where}: {reason}",
                              lost=lost) from None
        except asyncssh.SFTPError as err:
            raise AccessError("command-failed", f"script upload failed: {err.reason}") from None


async def _upload(conn, script: bytes, args: Sequence[str]) -> str:
    remote = f"/tmp/fleet-script-{secrets.token_hex(6)}"
    async with conn.start_sftp_client() as sftp:
        async with sftp.open(remote, "wb", asyncssh.SFTPAttrs(permissions=0o700)) as f:
            await f.write(script)
        await sftp.chmod(remote, 0o700)
    run = " ".join([shlex.quote(remote), *(shlex.quote(a) for a in args)])
    return f"{run}; rc=$?; rm -f {shlex.quote(remote)}; exit $rc"


async def _run(conn, name: str, command: str, timeout: float, on_line: LineSink | None,
               keep_output: bool, result: NodeResult) -> None:
    process = await conn.create_process(command, encoding="utf-8", errors="replace")
    process.stdin.write_eof()

    async def pump(reader, stream: str, sink: list[str]) -> None:
        while True:
            line = await reader.readline()
            if not line:  # EOF (a blank line still has its "\n")
                return
            line = line.rstrip("\n")
            if keep_output:
                sink.append(line)
            if on_line is not None:
                on_line(name, stream, line)

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(pump(process.stdout, "stdout", result.stdout),
                                 pump(process.stderr, "stderr", result.stderr))
            await process.wait_closed()
    except asyncio.CancelledError:
        _stop(process)  # Ctrl-C / job cancelled: don't leave the command running
        raise
    except TimeoutError:
        _stop(process)
        result.exit_status = None
        result.error_kind = "timeout"
        result.error = f"still running after {timeout:g}s; closed"
        return
    if process.exit_signal:
        sig = process.exit_signal[0]
        result.exit_status = process.exit_status if process.exit_status is not None else -1
        result.error_kind = "command-failed"
        result.error = f"killed by signal {sig}"
        return
    status = process.exit_status
    if status is None:
        raise asyncssh.ConnectionLost("no exit status: the connection closed")
    result.exit_status = status
    result.error_kind = "ok" if status == 0 else "command-failed"
    result.error = None if status == 0 else f"exit status {status}"


def _stop(process) -> None:
    """Ask the remote side to kill the command, and close its channel."""
    try:
        process.send_signal("KILL")
    except (OSError, asyncssh.Error):
        pass
    process.close()
