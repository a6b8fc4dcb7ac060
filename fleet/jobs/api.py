"""JobsAPI: what both faces call for jobs, builds and artifacts (`engine.jobs`).

    await engine.jobs.build("iso", label="LAB", distributor="rack1", wait=True)
        -> BuildOutcome(artifact, job_id, cached)
    await engine.jobs.submit(kind, inputs) / register(kind, handler, group=...)
    await engine.jobs.list() / get(id) / logs(id) / wait(id) / cancel(id) / retry(id)
    await engine.jobs.artifacts() / artifact(id)

The first call recovers jobs a dead process left queued/running (they become
`interrupted`, with an event). A cache hit returns the artifact without a job.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from functools import cached_property
from typing import TYPE_CHECKING

from fleet.core.model import Artifact, Job, JobState
from fleet.errors import FleetError, UnknownTarget
from fleet.jobs.runner import Handler, JobRunner

if TYPE_CHECKING:
    from fleet.build.cache import ArtifactCache, Manifest

BUILD_GROUP = "build"
#: the builders' kinds (fleet.build.builders.BUILDERS), named here so that a
#: process that never builds (`exec`) does not import the build modules
BUILD_KINDS = ("ipxe", "grub", "syslinux", "iso", "wiper")


class BuildFailed(FleetError):
    exit_code = 1


@dataclass(frozen=True)
class BuildOutcome:
    artifact: Artifact | None  # None while the job runs (wait=False)
    job_id: int | None  # None on a cache hit
    cached: bool


class JobsAPI:
    def __init__(self, engine, limits: dict[str, int] | None = None):
        self.engine = engine
        self.runner = JobRunner(engine, limits)
        self._inflight: dict[str, asyncio.Future[int]] = {}  # artifact id -> job id
        self._ready_lock = asyncio.Lock()
        self._ready = False
        for kind in BUILD_KINDS:
            self.runner.register(kind, self._build_handler, group=BUILD_GROUP)
        # fleet exec runs as a job (fleet.access.exec); registered here so a worker
        # or `job retry` in any process can run one
        self.runner.register("exec", _exec_handler, group="exec")
        # post-boot scripts (submitted at call-home): any process can retry one
        from fleet.configure import postboot

        self.runner.register(postboot.KIND, postboot.handler(engine), group=postboot.KIND)
        engine.on_close(self.close, first=True)  # before the pools its jobs use

    @cached_property
    def cache(self) -> "ArtifactCache":
        from fleet.build.cache import ArtifactCache

        return ArtifactCache(self.engine.paths.artifacts_dir)

    async def start(self) -> list[int]:
        """Recover jobs of dead processes (idempotent); returns the interrupted ids."""
        async with self._ready_lock:
            if self._ready:
                return []
            self._ready = True
            self._sweep_temp()
            return await self.runner.recover()

    async def close(self) -> None:
        await self.runner.close()

    # -- generic jobs -------------------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, group: str | None = None,
                 retryable: bool = True) -> None:
        """Add a job kind: `async def handler(ctx, inputs) -> dict`."""
        self.runner.register(kind, handler, group=group, retryable=retryable)

    async def submit(self, kind: str, inputs: dict) -> int:
        await self.start()
        return await self.runner.submit(kind, inputs)

    async def list(self, states: Iterable[JobState | str] | None = None,
                   limit: int = 500) -> list[Job]:
        await self.start()
        if states is not None:
            states = [JobState(s) for s in states]
        return await self.engine.store.jobs.list(states, limit)

    async def get(self, job_id: int) -> Job:
        await self.start()
        return await self.runner.get(job_id)

    async def logs(self, job_id: int, after_seq: int = 0) -> list[tuple[int, float, str]]:
        await self.get(job_id)
        await self.runner.flush()
        return await self.engine.store.jobs.logs(job_id, after_seq)

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        await self.start()
        return await self.runner.wait(job_id, timeout)

    async def cancel(self, job_id: int) -> Job:
        await self.start()
        return await self.runner.cancel(job_id)

    async def retry(self, job_id: int, *, claim: bool = True) -> int:
        """A new job with the same inputs (`_retry_of` links it to the old one)."""
        await self.start()
        return await self.runner.retry(job_id, claim=claim)

    async def claim(self, job_id: int) -> bool:
        """Run an unclaimed queued job in this process."""
        await self.start()
        return await self.runner.claim(job_id)

    async def run_worker(self, poll: float = 0.5) -> None:
        """Claim and run unclaimed queued jobs until cancelled (for `serve`)."""
        await self.start()
        sweep = 0.0
        while True:
            if time.monotonic() - sweep > 10.0:  # builds of CLI processes that died
                sweep = time.monotonic()
                await self.runner.recover(again=True)
            for job_id in await self.engine.store.jobs.unclaimed():
                if self.runner.kinds.get((await self.runner.get(job_id)).kind):
                    await self.runner.claim(job_id)
            await asyncio.sleep(poll)

    # -- builds -------------------------------------------------------------------------

    async def build(self, kind: str, *, wait: bool = True, claim: bool = True,
                    **options: Any) -> BuildOutcome:
        """Build an artifact, or return the cached one at once (no job).

        Options: see fleet.build.request. A missing tool raises EnvironmentProblem
        naming the Debian package; with `wait`, a failed job raises BuildFailed.
        `claim=False` (with wait=False) leaves the queued job to a worker
        (`claim()`, `run_worker()`, or `fleet --headless job run ID`)."""
        from fleet.build.builders import plan
        from fleet.build.request import normalize

        await self.start()
        req = normalize(self.engine, kind, **options)
        aid, _ = plan(self.engine, req)
        artifact = await self._from_cache(aid, req.get("distributor"))
        if artifact is not None:
            return BuildOutcome(artifact, None, True)
        if not claim:
            job_id = await self.runner.submit(kind, req, claim=False)
        else:
            job_id = await self._job_for(aid, kind, req)
        if not wait:
            return BuildOutcome(None, job_id, False)
        return await self.outcome(job_id, req.get("distributor"))

    async def _job_for(self, aid: str, kind: str, req: dict) -> int:
        """One job per artifact id in this process: identical requests made
        while it is queued or running share it."""
        pending = self._inflight.get(aid)
        if pending is not None:
            job_id = await asyncio.shield(pending)
            if self.runner.is_local(job_id):
                return job_id
            job = await self.runner.get(job_id)
            if job.state is JobState.SUCCEEDED:
                return job_id
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[aid] = future
        try:
            job_id = await self.runner.submit(kind, req)
        except BaseException as err:
            self._inflight.pop(aid, None)
            future.set_exception(err)
            future.exception()  # retrieved: identical waiters re-raise it
            raise
        future.set_result(job_id)
        return job_id

    async def outcome(self, job_id: int, distributor: str | None = None) -> BuildOutcome:
        """Wait for a build job; its artifact, or BuildFailed with the job's error."""
        job = await self.runner.wait(job_id)
        if job.state is not JobState.SUCCEEDED:
            raise BuildFailed(f"job {job_id} {job.state.value}: {job.error or ''}".rstrip(": "))
        artifact = await self.artifact(job.result["artifact"])
        if distributor:
            await self._assign(artifact, distributor)
        return BuildOutcome(artifact, job_id, False)

    async def artifacts(self) -> list[Artifact]:
        return await self.engine.artifacts()

    async def artifact(self, artifact_id: str) -> Artifact:
        a = await self.engine.store.artifacts.get(artifact_id)
        if a is None:
            matches = [x for x in await self.artifacts() if x.id.startswith(artifact_id)]
            if len(matches) == 1:
                return matches[0]
            raise UnknownTarget(f"unknown artifact {artifact_id!r}")
        return a

    async def _from_cache(self, aid: str, distributor: str | None) -> Artifact | None:
        manifest = self.cache.lookup(aid)
        if manifest is None:
            return None
        artifact = await self.engine.store.artifacts.get(aid)
        if artifact is None or not Path(artifact.path).exists():
            artifact = await self._record(manifest, distributor, built=False)
        elif distributor:
            await self._assign(artifact, distributor)
        return artifact

    def _artifact_of(self, m: "Manifest") -> Artifact:
        return Artifact(id=m.id, kind=m.kind, name=m.name,
                        path=str(m.path_in(self.cache.folder(m.id))), sha256=m.sha256,
                        size=m.size, created_at=m.created_at, version=m.version,
                        meta={**m.meta, "files": m.files})

    async def _record(self, m: "Manifest", distributor: str | None, *, built: bool) -> Artifact:
        """Store the artifact (event artifact.built, or artifact.cached when found in
        a cache another store filled) and assign it to the distributor."""
        artifact = self._artifact_of(m)
        engine = self.engine
        if engine.read_only:
            return artifact
        async with engine.store.transaction() as tx:
            await engine.store.artifacts.save(tx, artifact)
            word = "built" if built else "cached"
            await engine.store.events.append(tx, [engine.event(
                f"artifact.{word}", artifact.id,
                f"{artifact.kind} artifact {artifact.name} {word} ({artifact.id[:12]})",
                artifact_kind=artifact.kind, name=artifact.name, path=artifact.path,
                sha256=artifact.sha256)])
        if distributor:
            await self._assign(artifact, distributor)
        return artifact

    async def _assign(self, artifact: Artifact, distributor: str) -> bool:
        engine = self.engine
        if engine.read_only:
            return False
        if artifact.id in await engine.store.distributors.artifacts(distributor):
            return False
        async with engine.store.transaction() as tx:
            await engine.store.distributors.assign(tx, distributor, artifact.id)
            await engine.store.events.append(tx, [engine.event(
                "distributor.artifact_assigned", distributor,
                f"{artifact.kind} artifact {artifact.name} assigned to {distributor}",
                artifact=artifact.id, artifact_kind=artifact.kind)])
        return True

    async def _build_handler(self, ctx, inputs: dict) -> dict:
        from fleet.build.builders import run_build

        manifest, reused = await run_build(ctx, self.engine, self.cache, inputs)
        artifact = await self._record(manifest, inputs.get("distributor"), built=not reused)
        ctx.progress(1.0, "done")
        ctx.log(f"{artifact.name}: {artifact.path} sha256 {artifact.sha256}")
        return {"artifact": artifact.id, "name": artifact.name, "path": artifact.path,
                "sha256": artifact.sha256, "size": artifact.size, "reused": reused}

    def _sweep_temp(self, older_than: float = 3600.0) -> None:
        """Temp dirs of builds whose process died (a live build touches its own)."""
        tmp = Path(self.engine.paths.artifacts_dir) / ".tmp"  # = self.cache.root / ".tmp"
        if not tmp.is_dir():
            return
        cutoff = time.time() - older_than
        for entry in tmp.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:
                pass


async def _exec_handler(ctx, inputs: dict) -> dict:
    from fleet.access.exec import exec_job

    return await exec_job(ctx.engine.access, ctx, inputs)
