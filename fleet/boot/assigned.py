"""The artifacts a distributor serves: its assigned builds, by name, read-only.

A build assigned to a distributor (`fleet --headless build iso --distributor
rack1`) is served by that distributor's HTTP at `/artifacts/<name>` and by its
TFTP as `<name>` (or `artifacts/<name>`), straight from the content-addressed
cache folder (nothing is copied). Names:

| artifact                         | served as                 | e.g.                    |
|----------------------------------|---------------------------|-------------------------|
| one file (an ISO)                | `<artifact name>`         | `LAB.iso`               |
| a folder (iPXE, GRUB, SYSLINUX)  | `<artifact name>/<file>`  | `ipxe/undionly.kpxe`    |

`manifest.json` is never served. When two assigned artifacts give the same name,
the newer build wins. Lookups are in memory (no database on the TFTP path): the
index is rebuilt from the store at start and whenever a
`distributor.artifact_assigned` event for this distributor arrives on the change
feed (from this process or another one sharing the store). A looked-up file must
still be a regular file whose real path stays inside its artifact's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from fleet.core.model import Artifact

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

PREFIX = "artifacts/"
ASSIGN_EVENTS = frozenset({"distributor.artifact_assigned", "distributor.artifact_unassigned"})
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}")


def served_files(artifact: Artifact) -> dict[str, tuple[Path, Path]]:
    """name -> (file, the artifact's folder) for one artifact (see the module table)."""
    path = Path(artifact.path)
    files = dict(artifact.meta.get("files") or {})
    out: dict[str, tuple[Path, Path]] = {}
    if _SEGMENT.fullmatch(artifact.name) is None or artifact.name in (".", ".."):
        return out
    if path.name in files:  # one-file artifact: its path is the file itself
        out[artifact.name] = (path, path.parent)
        return out
    for fname in sorted(files):
        if fname == "manifest.json" or not all(_SEGMENT.fullmatch(p) and p not in (".", "..")
                                               for p in fname.split("/")):
            continue
        out[f"{artifact.name}/{fname}"] = (path / fname, path)
    return out


def index(artifacts: Iterable[Artifact]) -> dict[str, tuple[Path, Path]]:
    """Every served name of `artifacts`; on a clash the newer build wins."""
    out: dict[str, tuple[Path, Path]] = {}
    for artifact in sorted(artifacts, key=lambda a: (a.created_at, a.id)):
        out.update(served_files(artifact))
    return out


def _confined(path: Path, folder: Path) -> Path | None:
    try:
        root = os.path.realpath(folder)
        real = os.path.realpath(path)
    except OSError:
        return None
    if not real.startswith(root.rstrip(os.sep) + os.sep) or not os.path.isfile(real):
        return None
    return Path(real)


class AssignedArtifacts:
    """The in-memory index of one distributor's assigned artifacts (module doc)."""

    def __init__(self, engine: "Engine", site: str):
        self.engine = engine
        self.site = site
        self._files: dict[str, tuple[Path, Path]] = {}
        self._task: asyncio.Task | None = None
        self._sub = None

    def names(self) -> list[str]:
        return sorted(self._files)

    def find(self, name: str) -> Path | None:
        """The file served as `name` (`artifacts/` prefix optional), or None."""
        if name.startswith(PREFIX):
            name = name[len(PREFIX):]
        entry = self._files.get(name.lstrip("/"))
        return None if entry is None else _confined(*entry)

    async def refresh(self) -> None:
        store = self.engine.store
        found = []
        for aid in await store.distributors.artifacts(self.site):
            artifact = await store.artifacts.get(aid)
            if artifact is not None:
                found.append(artifact)
        self._files = index(found)

    async def start(self) -> None:
        """Load the index and follow the change feed (subscribed first: no gap)."""
        self._sub = self.engine.follow()
        await self.refresh()
        self._task = asyncio.ensure_future(self._follow(self._sub))

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, sub) -> None:
        async for event in sub:
            if event.kind in ASSIGN_EVENTS and event.subject == self.site:
                try:
                    await self.refresh()
                    log.info("distributor %s serves artifacts: %s", self.site,
                             ", ".join(self.names()) or "none")
                except Exception:
                    log.exception("refreshing the artifacts of %s", self.site)
