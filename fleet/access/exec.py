"""Fleet exec: one command (or an uploaded script) on many nodes, in parallel.

Each node gets a result with `error_kind`:

    ok              exit status 0
    command-failed  it ran and exited non-zero (or was killed by a signal)
    timeout         it ran longer than the per-node `timeout` (killed, then reported)
    unreachable     no route, the jump or node did not answer within
                    connect_timeout, the connection was refused or lost
    auth            the node refused the operator's key
    host-key        the node's host key is unknown (strict) or CHANGED

`timeout` bounds the command itself; connecting is bounded by the profile's
`connect_timeout` per step. A node whose pooled connection died under it (its
jump went down) is retried `retries` times (default 1), through the site's next
jump if the first is down: commands run by fan-out should be idempotent, since
a command cut off with its connection may or may not have run.

Cancelling a run (Ctrl-C, task.cancel(), `fleet --headless job cancel ID`
from any process, or closing the engine) or hitting `timeout` kills the command
and closes its channel. Closing the channel alone does not stop a command without a PTY
(sshd SIGHUPs only PTY sessions), and OpenSSH refuses "signal" requests in root
sessions, so every command is sent behind two shell builtins (`guarded()`): its
stdin becomes /dev/null and its shell first writes one tagged stderr line with
its pid, which fleet takes out of the output. sshd makes each session its own
process group led by that shell, so a kill is `kill -KILL -PID` on a second
channel of the same connection (processes that left the group with setsid
survive, as do commands under a ForceCommand wrapper that does not exec the
shell). Nothing runs beside the command: no fork on the happy path (an
earlier guard kept a reader subshell per command, a fifth of a warm fan-out's
remote CPU). If fleet itself dies, the command runs on, as with `ssh host cmd`.
The demo's simulated nodes (profile `demo:`) run commands unguarded. The
node's login shell must be a POSIX sh (bash, dash, zsh, ksh; not fish or csh).

Each run is a job of kind "exec" run by the job runner (fleet.jobs): job.*
events, progress = nodes done / total, a log line per node result, the summary
as its result (state `failed` when any node failed, `cancelled` when
cancelled). Events `exec.started` / `exec.finished` (who, which nodes, the
command verbatim, exit codes) and one `ssh.command` per command sent to a
node (fleet.access.audit; the kills too), written in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import asyncssh

from fleet.access.pool import AccessError, CommandFailed, Unreachable
from fleet.core.model import JobState, Reachability, Severity
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.access.api import AccessAPI
    from fleet.core.model import Node
    from fleet.jobs.runner import JobContext

ERROR_KINDS = ("ok", "command-failed", "timeout", "unreachable", "auth", "host-key",
               "cancelled")

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
    state: str = "running"  # the job's final state: succeeded | failed | cancelled
    complete: bool = field(default=False, repr=False)  # every node got its answer

    @property
    def cancelled(self) -> bool:
        return self.state == JobState.CANCELLED.value

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


class ExecFailed(FleetError):
    """The exec job itself failed (not a node: e.g. the store or a bug)."""


@dataclass
class _Live:
    """What the submitting call attaches to its own job (not stored): node
    objects, the script's bytes, the output callbacks, and where the report goes."""

    nodes: list
    script: bytes | None
    on_line: LineSink | None
    on_result: Callable[[NodeResult], None] | None
    keep_output: bool
    report: ExecReport | None = None


async def run_exec(api: "AccessAPI", nodes: Sequence["Node"], command: str, *,
                   parallel: int = 32, timeout: float = 60.0, retries: int = 1,
                   script: Path | None = None, script_args: Sequence[str] = (),
                   on_line: LineSink | None = None,
                   on_result: Callable[[NodeResult], None] | None = None,
                   keep_output: bool = False) -> ExecReport:
    """Submit an exec job, run it in this process, wait for it, return its report.
    Cancelling the caller cancels the job; a job cancelled from elsewhere returns
    a report with `state == "cancelled"` (unfinished nodes: error_kind cancelled)."""
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
    inputs = {"command": command, "shown": shown, "nodes": names, "parallel": parallel,
              "timeout": timeout, "retries": retries, "who": operator_name(),
              "script": str(Path(script).resolve()) if script is not None else None,
              "script_args": list(script_args)}
    live = _Live(list(nodes), script_bytes, on_line, on_result, keep_output)
    jobs = engine.jobs
    job_id = await jobs.submit("exec", inputs, attach=live)
    runner = jobs.runner
    try:
        job = await runner.wait(job_id)
    except asyncio.CancelledError:
        # the caller gave up (Ctrl-C, task.cancel()): so does the job
        if not runner.is_local(job_id):
            raise
        await asyncio.shield(runner.cancel(job_id))
        raise
    report = live.report
    if report is None:  # cancelled before it started
        report = ExecReport(job_id, shown, [_cancelled(n) for n in names], 0.0)
    report.state = job.state.value
    if job.state is JobState.FAILED and not report.complete:
        raise ExecFailed(f"exec job {job_id} failed: {job.error}")
    return report


def _cancelled(name: str) -> NodeResult:
    return NodeResult(name, None, 0.0, "cancelled", "the job was cancelled before this "
                                                     "node finished")


async def exec_job(api: "AccessAPI", ctx: "JobContext", inputs: dict) -> dict:
    """The "exec" job handler (the access facade registers it)."""
    from fleet.jobs.runner import JobFailed

    engine = api.engine
    live = ctx.attached if isinstance(ctx.attached, _Live) else None
    names = list(inputs["nodes"])
    if live is not None:
        nodes, script_bytes = live.nodes, live.script
        on_line, on_result, keep = live.on_line, live.on_result, live.keep_output
    else:  # run by a worker or retried: from the stored inputs
        nodes = [await engine.node(n) for n in names]
        script_bytes = Path(inputs["script"]).read_bytes() if inputs.get("script") else None
        on_line = on_result = None
        keep = False
    command, shown, who = inputs["command"], inputs["shown"], inputs["who"]
    parallel, timeout = int(inputs["parallel"]), float(inputs["timeout"])
    retries = int(inputs.get("retries", 1))
    script_args = list(inputs.get("script_args") or ())
    await api.get_pool()
    job_id = ctx.job_id
    api.commands.queue(engine.event(  # written with the first ssh.command batch
        "exec.started", str(job_id), f"{who} runs {shown!r} on {len(names)} node(s)",
        job=job_id, who=who, nodes=names, command=shown, parallel=parallel, timeout=timeout))
    t0 = time.monotonic()
    report = ExecReport(job_id, shown, [], 0.0)
    if live is not None:
        live.report = report
    results: dict[str, NodeResult] = {}
    sem = asyncio.Semaphore(parallel)
    guard = engine.profile.demo is None  # simulated nodes have a toy shell
    total = len(nodes)
    ctx.progress(0.0, f"0/{total} nodes")

    async def one(node: "Node") -> None:
        async with sem:
            r = await _run_node(api, node, command, timeout, retries, script_bytes,
                                script_args, on_line, keep, job_id, guard)
        results[node.name] = r
        ctx.log(_log_line(r))
        ctx.progress(len(results) / max(1, total), f"{len(results)}/{total} nodes")
        if on_result is not None:
            on_result(r)

    state = JobState.CANCELLED
    try:
        await asyncio.gather(*(one(n) for n in nodes))
        state = JobState.SUCCEEDED
    finally:
        missing = [n for n in names if n not in results]
        for name in missing:
            results[name] = _cancelled(name)
            if on_result is not None and state is JobState.CANCELLED:
                on_result(results[name])
        report.results[:] = [results[n] for n in names]
        report.duration_s = round(time.monotonic() - t0, 3)
        if state is JobState.SUCCEEDED and report.failed:
            state = JobState.FAILED
        report.state = state.value
        await _finish(api, report, who, names, state)
    report.complete = True
    summary = {**report.summary(),
               "exit_codes": {r.node: r.exit_status for r in report.results}}
    if report.failed:
        raise JobFailed(report.summary_text(), result=summary)
    return summary


def _log_line(r: NodeResult) -> str:
    text = f"{r.node}: {r.error_kind}"
    if r.exit_status is not None:
        text += f" exit {r.exit_status}"
    text += f" in {r.duration_s:.2f}s"
    if r.error:
        text += f": {r.error}"
    return text


async def _finish(api: "AccessAPI", report: ExecReport, who: str, names: list[str],
                  state: JobState) -> None:
    """Reachability of every node, the queued ssh.command events and
    exec.finished, in one transaction (one executemany per kind of row)."""
    engine = api.engine
    now = engine.clock()
    failed = report.failed
    exit_codes = {r.node: r.exit_status for r in report.results}
    summary = report.summary()
    rows = []
    for r in report.results:
        if r.error_kind in ("ok", "command-failed", "timeout"):
            rows.append((r.node, Reachability.REACHABLE, None))
        elif r.error_kind != "cancelled":
            rows.append((r.node, Reachability.UNREACHABLE, r.error))
    store = engine.store
    async with store.transaction() as tx:
        await store.nodes.set_reachability_many(tx, now, rows)
        await api.commands.flush(tx)
        await store.events.append(tx, [engine.event(
            "exec.finished", str(report.job_id),
            f"{report.command!r}: {report.summary_text()}",
            severity=Severity.INFO if not failed else Severity.WARNING,
            job=report.job_id, who=who, nodes=names, command=report.command,
            exit_codes=exit_codes, failed=[r.node for r in failed],
            by_kind=summary["by_kind"], duration_s=report.duration_s, state=state.value)])


async def _run_node(api: "AccessAPI", node: "Node", command: str, timeout: float,
                    retries: int, script: bytes | None, script_args: Sequence[str],
                    on_line: LineSink | None, keep_output: bool, job_id: int | None = None,
                    guard: bool = True) -> NodeResult:
    t0 = time.monotonic()
    route = api.route(node)
    attempts = 0
    result = NodeResult(node.name, None, 0.0, "unreachable", route=route.kind.value)
    while True:
        attempts += 1
        result.attempts = attempts
        try:
            await _attempt(api, node, route, command, timeout, script, script_args,
                           on_line, keep_output, result, job_id, guard)
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
                   keep_output, result: NodeResult, job_id: int | None = None,
                   guard: bool = True) -> None:
    async with api.pool.session(node, route) as link:
        result.via = link.via
        conn = link.conn
        try:
            if script is not None:
                command = await _upload(conn, script, script_args)
            await _run(conn, node.name, command, timeout, on_line, keep_output, result,
                       lambda sent: api.commands.add(node.name, sent, via=link.via,
                                                     job=job_id),
                       spawn=api.pool.spawn if guard else None)
        except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost,
                asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as err:
            link.lost = link.lost or conn.is_closed()
            reason = getattr(err, "reason", None) or str(err) or type(err).__name__
            lost = not link.alive()
            where = f" (via {link.via})" if link.via else ""
            raise Unreachable(f"connection lost{where}: {reason}",
                              lost=lost) from None
        except asyncssh.SFTPError as err:
            raise CommandFailed(f"script upload failed: {err.reason}") from None


async def _upload(conn, script: bytes, args: Sequence[str]) -> str:
    remote = f"/tmp/fleet-script-{secrets.token_hex(6)}"
    async with conn.start_sftp_client() as sftp:
        async with sftp.open(remote, "wb", asyncssh.SFTPAttrs(permissions=0o700)) as f:
            await f.write(script)
        await sftp.chmod(remote, 0o700)
    run = " ".join([shlex.quote(remote), *(shlex.quote(a) for a in args)])
    return f"{run}; rc=$?; rm -f {shlex.quote(remote)}; exit $rc"


async def _run(conn, name: str, command: str, timeout: float, on_line: LineSink | None,
               keep_output: bool, result: NodeResult,
               audit: Callable[[str], None] | None = None, *, spawn=None) -> None:
    """Run `command` on `conn`; with `spawn` (the pool's), guarded: see guarded().
    `audit(cmd)` is told of every command sent (the command once the node accepted
    it, a kill when one is sent)."""
    tag = f"fleet-pid-{secrets.token_hex(4)}" if spawn is not None else None
    audit = audit or (lambda sent: None)
    opening = asyncio.ensure_future(conn.create_process(
        guarded(command, tag) if tag else command, encoding="utf-8", errors="replace"))
    try:
        # shielded: a cancel while the exec request is on its way must still find
        # the command once it runs, to kill it
        process = await asyncio.shield(opening)
    except asyncio.CancelledError:
        if tag is not None:
            spawn(_kill_when_open(conn, opening, tag, audit))
        else:
            opening.add_done_callback(_close_when_open)
        raise
    process.stdin.write_eof()  # nothing to send (a guarded command reads /dev/null)
    audit(command)  # the ssh.command event: the node accepted the command
    pid: list[int] = []

    async def pump(reader, stream: str, sink: list[str]) -> None:
        while True:
            line = await reader.readline()
            if not line:  # EOF (a blank line still has its "\n")
                return
            line = line.rstrip("\n")
            if tag and not pid and stream == "stderr" and (at := line.find(tag + " ")) >= 0:
                # the guard's line; a login script may have left text before it
                pid.extend(_session_pid(line[at:], tag))
                line = line[:at]
                if not line:
                    continue
            if keep_output:
                sink.append(line)
            if on_line is not None:
                on_line(name, stream, line)

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(pump(process.stdout, "stdout", result.stdout),
                                 pump(process.stderr, "stderr", result.stderr))
            await process.wait_closed()
    except asyncio.CancelledError:  # Ctrl-C / job cancelled
        if tag is None:
            _hang_up(process)
        else:  # a cancelled task cannot wait: the kill goes on in the background
            spawn(_kill_group(conn, process, tag, pid[0] if pid else None, audit))
        raise
    except TimeoutError:
        result.exit_status = None
        result.error_kind = "timeout"
        if tag is None:
            _hang_up(process)
            result.error = f"still running after {timeout:g}s; channel closed"
            return
        # not cancelled: kill it here, holding this node's session slot until done
        why = await _kill_group(conn, process, tag, pid[0] if pid else None, audit)
        result.error = f"still running after {timeout:g}s; " + (
            "killed" if why is None else f"could not kill it: {why}")
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


def guarded(command: str, tag: str) -> str:
    """`command` as sent to a POSIX shell: stdin from /dev/null, then one stderr
    line `TAG PID` naming the shell (the session's process group leader), then
    the command on its own line, verbatim and with nothing after it (`exit N`,
    heredocs, comments and a trailing backslash behave as in the command sent
    alone; line numbers in the shell's messages and `$LINENO` are one more). Only
    builtins run before it: no fork. Its own line, not `...; command`: a syntax
    error in the command's first line would show the guard in the shell's message
    and keep it from running."""
    return f'exec </dev/null; echo "{tag} $$" >&2\n{command}'


def _session_pid(text: str, tag: str) -> list[int]:
    """The pid from the guard's text `TAG PID`; nothing unless it is a plain ASCII
    number > 1 (`kill -- -1` would mean every process the user may signal)."""
    word = text[len(tag) + 1:].strip()
    return [int(word)] if word.isascii() and word.isdigit() and int(word) > 1 else []


def _hang_up(process) -> None:
    """An unguarded command: ask sshd to kill it (OpenSSH refuses in root
    sessions) and close its channel."""
    with contextlib.suppress(OSError, asyncssh.Error):
        process.send_signal("KILL")
    process.close()


def _close_when_open(opening: asyncio.Future) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


async def _kill_when_open(conn, opening: asyncio.Future, tag: str, audit) -> None:
    """A cancel came while the exec request was on its way: kill the command as
    soon as the node has started it."""
    try:
        process = await asyncio.wait_for(opening, 5.0)
    except (asyncio.TimeoutError, OSError, asyncssh.Error):
        return  # never started, or the connection is gone (and the command with it)
    await _kill_group(conn, process, tag, None, audit)


async def _kill_group(conn, process, tag: str, pid: int | None, audit) -> str | None:
    """Kill the guarded command's process group, with the pid from the guard's
    line (read here if it had not come yet), then close its channel; None when
    done, else why not. The "signal" request goes first, for servers that honour
    it."""
    with contextlib.suppress(OSError, asyncssh.Error):
        process.send_signal("KILL")
    try:
        if pid is None:  # cancelled before the guard's line was read
            pid = await asyncio.wait_for(_read_pid(process.stderr, tag), 2.0)
        if pid is None:
            return "its shell never reported its pid"
        # `-KILL -PID`, not `-- -PID`: dash (Debian's sh) reads `--` as a pid
        kill = f"kill -KILL -{pid} 2>/dev/null"
        audit(kill)
        await asyncio.wait_for(conn.run(kill, stdin=asyncssh.DEVNULL, check=False), 5.0)
        return None
    except asyncio.TimeoutError:
        return "no answer from the node"
    except (OSError, asyncssh.Error) as err:
        return f"the connection failed: {getattr(err, 'reason', '') or err}"
    finally:
        process.close()


async def _read_pid(stderr, tag: str) -> int | None:
    while line := await stderr.readline():
        if (at := line.find(tag + " ")) >= 0:
            found = _session_pid(line[at:].rstrip("\n"), tag)
            return found[0] if found else None
    return None
