"""BuildsAPI: boot media builds and the artifacts they make (`engine.builds`).

    await engine.builds.build("iso", label="LAB", distributor="rack1", wait=True)
        -> BuildOutcome(artifact, job_id, cached)
    await engine.builds.outcome(job_id) / artifacts() / artifact(id)

Builds run as jobs of the engine's job runner (one kind per builder, group
`build`); a cache hit returns the artifact without a job.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.core.model import Artifact, JobState
from fleet.errors import FleetError, UnknownTarget

if TYPE_CHECKING:
    from fleet.build.cache import ArtifactCache, Manifest
    from fleet.engine import Engine
    from fleet.jobs.api import JobsAPI
    from fleet.jobs.runner import JobContext

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


class BuildsAPI:
    def __init__(self, engine: "Engine", jobs: "JobsAPI"):
        self.engine = engine
        self.jobs = jobs
        self._inflight: dict[str, asyncio.Future[int]] = {}  # artifact id -> job id
        for kind in BUILD_KINDS:
            jobs.register(kind, self._build_handler, group=BUILD_GROUP)
        jobs.on_start(self._sweep_temp)

    @cached_property
    def cache(self) -> "ArtifactCache":
        from fleet.build.cache import ArtifactCache

        return ArtifactCache(self.engine.paths.artifacts_dir)

    async def build(self, kind: str, *, wait: bool = True, claim: bool = True,
                    **options: Any) -> BuildOutcome:
        """Build an artifact, or return the cached one at once (no job).

        Options: see fleet.build.request. A missing tool raises EnvironmentProblem
        naming the Debian package; with `wait`, a failed job raises BuildFailed.
        `claim=False` (with wait=False) leaves the queued job to a worker
        (`claim()`, `run_worker()`, or `fleet --headless job run ID`)."""
        from fleet.build.builders import plan
        from fleet.build.request import normalize

        await self.jobs.start()
        req = normalize(self.engine, kind, **options)
        aid, _ = plan(self.engine, req)
        artifact = await self._from_cache(aid, req.get("distributor"))
        if artifact is not None:
            return BuildOutcome(artifact, None, True)
        if not claim:
            job_id = await self.jobs.runner.submit(kind, req, claim=False)
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
            if self.jobs.runner.is_local(job_id):
                return job_id
            job = await self.jobs.runner.get(job_id)
            if job.state is JobState.SUCCEEDED:
                return job_id
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[aid] = future
        try:
            job_id = await self.jobs.runner.submit(kind, req)
        except BaseException as err:
            self._inflight.pop(aid, None)
            future.set_exception(err)
            future.exception()  # retrieved: identical waiters re-raise it
            raise
        future.set_result(job_id)
        return job_id

    async def outcome(self, job_id: int, distributor: str | None = None) -> BuildOutcome:
        """Wait for a build job; its artifact, or BuildFailed with the job's error."""
        job = await self.jobs.runner.wait(job_id)
        if job.state is not JobState.SUCCEEDED:
            raise BuildFailed(f"job {job_id} {job.state.value}: {job.error or ''}".rstrip(": "))
        artifact = await self.artifact(job.result["artifact"])
        if distributor:
            await self._assign(artifact, distributor)
        return BuildOutcome(artifact, job_id, False)

    async def artifacts(self) -> list[Artifact]:
        return await self.engine.store.artifacts.list()

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

    async def _build_handler(self, ctx: "JobContext", inputs: dict) -> dict:
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
