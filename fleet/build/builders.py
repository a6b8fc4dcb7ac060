"""The build job kinds and the one job handler they share: plan (cheap: the
artifact id from the inputs), then under the id's lock build into a temp dir
and rename it into the cache, then record the artifact (and its events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import shutil
import tempfile
from pathlib import Path

from fleet.build import grub, ipxe, iso, syslinux, wiper
from fleet.build.cache import ArtifactCache, Manifest, artifact_id
from fleet.build.request import key_fields

if TYPE_CHECKING:
    from fleet.engine import Engine

BUILDERS = {"ipxe": ipxe, "grub": grub, "syslinux": syslinux, "iso": iso, "wiper": wiper}


def plan(engine: "Engine", req: dict) -> tuple[str, str]:
    """(artifact id, name) of a normalized request; EnvironmentProblem when a
    tool or file it needs is missing."""
    kind = req["kind"]
    name, key = BUILDERS[kind].plan(engine, req)
    return artifact_id(kind, {"request": key_fields(req), "key": key}), name


async def run_build(ctx, engine: "Engine", cache: ArtifactCache, req: dict) -> tuple[Manifest, bool]:
    """Build (or find) the artifact of `req`; returns (manifest, reused)."""
    kind = req["kind"]
    ctx.progress(0.0, "plan")
    aid, name = plan(engine, req)
    ctx.log(f"artifact {aid}")
    ctx.progress(0.0, "wait for the cache lock")
    async with cache.lock(aid):
        manifest = cache.lookup(aid)
        if manifest is not None:
            ctx.log("already in the cache (built meanwhile by another job)")
            return manifest, True
        staged = cache.temp_dir(aid)
        work = Path(tempfile.mkdtemp(prefix="work.", dir=cache.root / ".tmp"))
        try:
            built = await BUILDERS[kind].build(ctx, engine, req, staged, work)
            ctx.progress(0.97, "hash and store")
            manifest = cache.commit(aid, staged, Manifest(
                id=aid, kind=kind, name=name, main=built.main, files={},
                version=built.version, meta=built.meta))
        except BaseException:
            cache.discard(staged)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return manifest, False
