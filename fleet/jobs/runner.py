"""The job runner: persistent, cancellable jobs with progress and logs.

A job is a row in the store (kind, inputs, state, progress + phase, log lines,
timestamps, result or error) and, while it runs, an asyncio task in the process
that owns it (`owner_pid`). Every state change writes its event in the same
transaction: job.queued, job.started, job.succeeded, job.failed,
job.cancelled, job.interrupted (subject: the job id).

Handlers are `async def handler(ctx: JobContext, inputs: dict) -> dict` (the
result). They report with `ctx.progress(fraction, phase)` and `ctx.log(line)`
(both cheap: the runner writes them in batches, one transaction per
`flush_interval`), run tools with `await ctx.run(argv, cwd=...)` (own process
group, output lines into the log, the whole group SIGKILLed on cancel), and may
look at `ctx.cancelled`. Raising `JobFailed` (or any exception) fails the job
with that message.

Each kind belongs to a group with a concurrency limit (builds: 2, exec: 16:
an exec waits on its nodes, and post-boot scripts start one per node).
Cancelling works from any process: `cancel()` writes the `cancelled` state
with its event; the owner notices within a flush interval (at once when it is
this process), kills the job's process groups and checks /proc that they died.
A job whose owner died (a PID that is gone, a zombie, or a reused PID) becomes
`interrupted` the next time a runner on that store starts (`recover()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

from fleet.core.model import Job, JobState, Severity
from fleet.errors import BadInput, FleetError, UnknownTarget
from fleet.jobs.procs import kill_group_and_wait, pid_alive

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

Handler = Callable[["JobContext", dict], Awaitable[dict]]

DEFAULT_LIMITS = {"build": 2, "exec": 16, "default": 2}

#: a queued job nobody claimed for this long is given up (interrupted) at recovery
UNCLAIMED_GRACE = 300.0

#: job ids run by any runner of this process (two engines in one process must
#: not call each other's jobs interrupted)
_LIVE_IN_PROCESS: set[tuple[str, int]] = set()


class JobFailed(FleetError):
    """Raised by a handler: the job failed with this message (and, optionally,
    a `result` to keep, e.g. an exec's summary when some nodes failed)."""

    def __init__(self, message: str = "", *, result: dict | None = None):
        super().__init__(message)
        self.result = result


class JobCancelled(Exception):
    """Raised inside a handler when its job was cancelled."""


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    group: str
    retryable: bool = True


class JobContext:
    """What a handler gets: progress, log, subprocesses, the cancelled flag."""

    def __init__(self, runner: "JobRunner", job_id: int, kind: str, inputs: dict,
                 attached: Any = None):
        self.runner = runner
        self.engine = runner.engine
        self.job_id = job_id
        self.kind = kind
        self.inputs = inputs
        #: what the submitting call attached (`submit(..., attach=)`); None when the
        #: job runs from its stored inputs (a worker, a retry, another process)
        self.attached = attached
        self.cancelled = False
        self._groups: set[int] = set()

    def progress(self, fraction: float, phase: str | None = None) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        self.runner._queue_progress(self.job_id, fraction, phase)

    def log(self, line: str) -> None:
        self.runner._queue_log(self.job_id, line)

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled()

    async def run(self, argv: Sequence[str | os.PathLike], *, cwd: str | os.PathLike | None = None,
                  env: Mapping[str, str] | None = None, check: bool = True,
                  on_line: Callable[[str], None] | None = None) -> int:
        """Run a tool in its own process group; stdout+stderr lines go to the log
        (and to `on_line`). Returns the exit status; with `check`, a non-zero
        status fails the job naming the tool and the last lines it printed."""
        self.check_cancelled()
        argv = [os.fspath(a) for a in argv]
        self.log("$ " + " ".join(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._groups.add(proc.pid)
        tail: list[str] = []
        try:
            assert proc.stdout is not None
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.log(line)
                tail = (tail + [line])[-5:]
                if on_line is not None:
                    on_line(line)
            status = await proc.wait()
        except BaseException:
            await kill_group_and_wait(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(proc.wait(), 2)
            raise
        finally:
            self._groups.discard(proc.pid)
        if self.cancelled:
            raise JobCancelled()
        if check and status != 0:
            detail = "; ".join(t for t in tail if t.strip())[-400:]
            raise JobFailed(f"{os.path.basename(argv[0])} exited with status {status}"
                            + (f": {detail}" if detail else ""))
        return status

    async def _kill_all(self) -> None:
        for pgid in list(self._groups):
            if not await kill_group_and_wait(pgid):
                log.warning("job %s: process group %s survived SIGKILL", self.job_id, pgid)


@dataclass
class _Running:
    job_id: int
    kind: str
    ctx: JobContext
    task: asyncio.Task
    done: asyncio.Event
    end_state: JobState | None = None  # set by cancel()/shutdown before cancelling


class JobRunner:
    def __init__(self, engine: "Engine", limits: Mapping[str, int] | None = None,
                 flush_interval: float = 0.2):
        self.engine = engine
        self.store = engine.store
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.flush_interval = flush_interval
        self.kinds: dict[str, JobKind] = {}
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._running: dict[int, _Running] = {}
        self._logs: list[tuple[int, float, str]] = []
        self._progress: dict[int, tuple[float, str | None]] = {}
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task | None = None
        self._recovered = False
        self._closed = False
        self._store_key = str(self.store.path)
        self.active_peak: dict[str, int] = {}  # most jobs of a group at once (tests, bench)
        self._active: dict[str, int] = {}

    # -- registry -----------------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, group: str | None = None,
                 retryable: bool = True) -> None:
        self.kinds[kind] = JobKind(kind, handler, group or kind, retryable)

    def _sem(self, group: str) -> asyncio.Semaphore:
        sem = self._sems.get(group)
        if sem is None:
            limit = self.limits.get(group, self.limits["default"])
            sem = self._sems[group] = asyncio.Semaphore(limit)
        return sem

    # -- recovery -------------------------------------------------------------------

    async def recover(self, *, again: bool = False) -> list[int]:
        """Jobs left queued/running by a process that is gone become interrupted.
        Once per runner unless `again` (a long-lived worker sweeps periodically)."""
        if (self._recovered and not again) or self.engine.read_only:
            return []
        self._recovered = True
        now = self.engine.clock()
        dead = []
        for job_id, kind, state, pid, created_at in await self.store.jobs.unfinished():
            if pid is None:
                if state is JobState.QUEUED:
                    if now - created_at < UNCLAIMED_GRACE:
                        continue  # unclaimed: a worker may still take it
                    dead.append((job_id, kind, "no worker claimed it"))
                    continue
                dead.append((job_id, kind, "it was running with no owner process"))
            elif pid == os.getpid():
                if (self._store_key, job_id) not in _LIVE_IN_PROCESS:
                    dead.append((job_id, kind, "its runner in this process stopped"))
            elif not pid_alive(pid, started_before=created_at):
                dead.append((job_id, kind, f"its owner process {pid} is gone"))
        out = []
        for job_id, kind, why in dead:
            if await self._finish(job_id, JobState.INTERRUPTED, error=f"interrupted: {why}",
                                  when=now, only_if_unfinished=True, kind=kind):
                out.append(job_id)
        return out

    # -- submitting -------------------------------------------------------------------

    async def submit(self, kind: str, inputs: dict, *, claim: bool = True,
                     attach: Any = None) -> int:
        """Create a queued job (and its event); with `claim`, run it in this process,
        its handler seeing `attach` as `ctx.attached`."""
        if kind not in self.kinds:
            raise BadInput(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.kinds))}")
        self.engine._writable(f"start a {kind} job")
        now = self.engine.clock()
        async with self.store.transaction() as tx:
            job_id = await self.store.jobs.create(tx, kind, inputs, now)
            if claim:
                await self.store.jobs.update(tx, job_id, owner_pid=os.getpid())
            await self.store.events.append(tx, [self.engine.event(
                "job.queued", str(job_id), f"job {job_id} ({kind}) queued", job_kind=kind,
                state="queued", **_link(inputs))])
        if claim:
            self._start(job_id, kind, inputs, attach)
        return job_id

    async def claim(self, job_id: int) -> bool:
        """Take an unclaimed queued job (created with claim=False) and run it here."""
        async with self.store.transaction() as tx:
            taken = await self.store.jobs.claim(tx, job_id, os.getpid())
        if not taken:
            return False
        job = await self.store.jobs.get(job_id)
        if job.kind not in self.kinds:
            await self._finish(job_id, JobState.FAILED, error=f"no handler for {job.kind!r}",
                               kind=job.kind)
            return False
        self._start(job_id, job.kind, dict(job.inputs))
        return True

    def _start(self, job_id: int, kind: str, inputs: dict, attached: Any = None) -> None:
        ctx = JobContext(self, job_id, kind, inputs, attached)
        done = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._drive(ctx, done),
                                                      name=f"fleet-job-{job_id}")
        self._running[job_id] = _Running(job_id, kind, ctx, task, done)
        _LIVE_IN_PROCESS.add((self._store_key, job_id))
        self._ensure_flusher()

    async def _drive(self, ctx: JobContext, done: asyncio.Event) -> None:
        spec = self.kinds[ctx.kind]
        job_id = ctx.job_id
        running = self._running[job_id]
        try:
            async with self._sem(spec.group):
                if ctx.cancelled:
                    raise asyncio.CancelledError
                self._active[spec.group] = self._active.get(spec.group, 0) + 1
                self.active_peak[spec.group] = max(self.active_peak.get(spec.group, 0),
                                                   self._active[spec.group])
                try:
                    await self._mark_started(job_id, ctx.kind)
                    result = await spec.handler(ctx, dict(ctx.inputs))
                finally:
                    self._active[spec.group] -= 1
            await self._finish(job_id, JobState.SUCCEEDED, result=result or {}, kind=ctx.kind)
        except (asyncio.CancelledError, JobCancelled):
            await ctx._kill_all()
            state = running.end_state or JobState.CANCELLED
            error = "cancelled" if state is JobState.CANCELLED else \
                "interrupted: fleet stopped while it ran"
            await self._finish(job_id, state, error=error, kind=ctx.kind,
                               only_if_unfinished=True)
        except Exception as err:  # the handler's failure is the job's failure
            await ctx._kill_all()
            message = str(err) or type(err).__name__
            if not isinstance(err, FleetError):
                log.debug("job %s failed", job_id, exc_info=True)
                message = f"{type(err).__name__}: {message}"
            ctx.log(f"error: {message}")
            await self._finish(job_id, JobState.FAILED, error=message, kind=ctx.kind,
                               result=getattr(err, "result", None))
        finally:
            self._running.pop(job_id, None)
            _LIVE_IN_PROCESS.discard((self._store_key, job_id))
            done.set()

    async def _mark_started(self, job_id: int, kind: str) -> None:
        now = self.engine.clock()
        async with self.store.transaction() as tx:
            await self.store.jobs.update(tx, job_id, state=JobState.RUNNING, started_at=now,
                                         owner_pid=os.getpid())
            await self.store.events.append(tx, [self.engine.event(
                "job.started", str(job_id), f"job {job_id} ({kind}) started", job_kind=kind,
                state="running")])

    async def _finish(self, job_id: int, state: JobState, **kw: Any) -> bool:
        """Write the final state and its event, unless the job already finished
        (e.g. another process cancelled it). Pending log lines go first. A busy
        store is retried: a job must not stay `running` because of one SQLITE_BUSY."""
        for attempt in range(6):
            try:
                return await self._finish_once(job_id, state, **kw)
            except sqlite3.OperationalError as err:
                if attempt == 5 or "locked" not in str(err) and "busy" not in str(err):
                    raise
                log.warning("job %s: store busy recording %s; retrying", job_id, state.value)
                await asyncio.sleep(0.1 * (attempt + 1))
        return False

    async def _finish_once(self, job_id: int, state: JobState, *, result: dict | None = None,
                           error: str | None = None, when: float | None = None,
                           only_if_unfinished: bool = True, kind: str = "") -> bool:
        await self.flush()
        now = when if when is not None else self.engine.clock()
        async with self.store.transaction() as tx:
            current = await self.store.jobs.state_in(tx, job_id)
            if current is None:
                return False
            if only_if_unfinished and current.finished:
                return False
            fields: dict[str, Any] = {"state": state, "finished_at": now, "error": error}
            if result is not None:
                fields["result"] = result
            if state is JobState.SUCCEEDED:
                fields["progress"] = 1.0
            await self.store.jobs.update(tx, job_id, **fields)
            word = state.value
            message = f"job {job_id} ({kind}) {word}" + (f": {error}" if error and
                                                           state is not JobState.CANCELLED
                                                           else "")
            severity = {JobState.FAILED: Severity.ERROR,
                        JobState.INTERRUPTED: Severity.WARNING}.get(state, Severity.INFO)
            data: dict[str, Any] = {"job_kind": kind, "state": word}
            if error:
                data["error"] = error
            if result:
                data["result"] = result
            await self.store.events.append(tx, [self.engine.event(
                f"job.{word}", str(job_id), message, severity=severity, **data)])
        return True

    # -- cancel, retry, wait ------------------------------------------------------------

    async def cancel(self, job_id: int) -> Job:
        job = await self.get(job_id)
        if job.state.finished:
            return job
        self.engine._writable("cancel a job")
        local = self._running.get(job_id)
        if local is not None:
            local.end_state = JobState.CANCELLED
            await self._cancel_local(local)
            await local.done.wait()
        else:
            # queued or running in another process: the owner notices the state
            # and kills the job's processes (see _watch_remote_cancels)
            await self._finish(job_id, JobState.CANCELLED, error="cancelled", kind=job.kind)
        return await self.get(job_id)

    async def _cancel_local(self, running: _Running) -> None:
        running.ctx.cancelled = True
        await running.ctx._kill_all()
        running.task.cancel()

    async def retry(self, job_id: int, *, claim: bool = True) -> int:
        job = await self.get(job_id)
        if not job.state.finished:
            raise BadInput(f"job {job_id} is {job.state.value}; only a finished job can be "
                           "retried")
        spec = self.kinds.get(job.kind)
        if spec is None or not spec.retryable:
            raise BadInput(f"jobs of kind {job.kind!r} cannot be retried here")
        inputs = {k: v for k, v in job.inputs.items() if k != "_retry_of"}
        inputs["_retry_of"] = job_id
        return await self.submit(job.kind, inputs, claim=claim)

    async def wait(self, job_id: int, timeout: float | None = None,
                   poll: float = 0.1) -> Job:
        """Until the job finishes (local: its task; another process's: polling)."""
        async def until_done() -> Job:
            while True:
                local = self._running.get(job_id)
                if local is not None:
                    await local.done.wait()
                job = await self.get(job_id)
                if job.state.finished:
                    return job
                await asyncio.sleep(poll)
        return await asyncio.wait_for(until_done(), timeout)

    async def get(self, job_id: int) -> Job:
        job = await self.store.jobs.get(job_id)
        if job is None:
            raise UnknownTarget(f"unknown job {job_id}")
        return job

    def is_local(self, job_id: int) -> bool:
        return job_id in self._running

    # -- batched progress and logs ----------------------------------------------------------

    def _queue_progress(self, job_id: int, fraction: float, phase: str | None) -> None:
        old = self._progress.get(job_id)
        if phase is None and old is not None:
            phase = old[1]
        self._progress[job_id] = (fraction, phase)
        self._ensure_flusher()

    def _queue_log(self, job_id: int, line: str) -> None:
        self._logs.append((job_id, self.engine.clock(), line))
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            if self._closed:
                return
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="fleet-job-flusher")

    async def _flush_loop(self) -> None:
        while self._running or self._logs or self._progress:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
                await self._watch_remote_cancels()
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy store must not kill the flusher
                log.exception("job flush failed")

    async def flush(self) -> None:
        async with self._flush_lock:
            if not self._logs and not self._progress:
                return
            logs, self._logs = self._logs, []
            progress, self._progress = self._progress, {}
            try:
                async with self.store.transaction() as tx:
                    if logs:
                        await self.store.jobs.log_many(tx, logs)
                    for job_id, (fraction, phase) in progress.items():
                        fields: dict[str, Any] = {"progress": fraction}
                        if phase is not None:
                            fields["phase"] = phase
                        await self.store.jobs.update(tx, job_id, **fields)
            except BaseException:
                # keep them for the next flush (newer progress wins)
                self._logs[:0] = logs
                for job_id, value in progress.items():
                    self._progress.setdefault(job_id, value)
                raise

    async def _watch_remote_cancels(self) -> None:
        ids = [j for j, r in self._running.items() if not r.ctx.cancelled]
        if not ids:
            return
        for job_id, state in (await self.store.jobs.states(ids)).items():
            if state is JobState.CANCELLED and job_id in self._running:
                running = self._running[job_id]
                running.end_state = JobState.CANCELLED
                await self._cancel_local(running)

    # -- shutdown -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Jobs still running here become interrupted (they can be retried)."""
        self._closed = True
        for running in list(self._running.values()):
            running.end_state = JobState.INTERRUPTED
            await self._cancel_local(running)
        for running in list(self._running.values()):
            with contextlib.suppress(Exception):
                await running.done.wait()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        await self.flush()


def _link(inputs: Mapping[str, Any]) -> dict:
    return {"retry_of": inputs["_retry_of"]} if "_retry_of" in inputs else {}

