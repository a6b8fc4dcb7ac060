"""The content-addressed artifact cache under `paths.artifacts_dir`.

    artifacts/<id>/            one finished artifact (never changed once there)
        manifest.json          files with sha256 and size, version, meta
        <files>
    artifacts/.locks/<id>.lock one flock per id while it is being built
    artifacts/.tmp/<id>.<rand> a build in progress

An artifact id is the sha256 of the canonical build inputs (request, resolved
script, fingerprints of tools and source files, BUILDER_VERSION). A build
takes the id's lock, looks again (another process may have finished it
meanwhile), builds into a temp dir on the same file system and renames it into
place: a reader sees a whole artifact or none, and identical builds running at
once (threads, tasks or processes) produce one artifact.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

#: bump when a builder's output changes for the same inputs
BUILDER_VERSION = 1


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def artifact_id(kind: str, key: dict) -> str:
    material = canonical({"builder": BUILDER_VERSION, "kind": kind, "key": key})
    return hashlib.sha256(material.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    id: str
    kind: str
    name: str
    main: str | None  # the one file that is the artifact (an ISO), else None: the folder
    files: dict[str, dict]  # relative name -> {"sha256", "size"}
    version: str | None
    meta: dict = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def sha256(self) -> str:
        if self.main:
            return self.files[self.main]["sha256"]
        return hashlib.sha256(canonical(self.files).encode()).hexdigest()

    @property
    def size(self) -> int:
        if self.main:
            return self.files[self.main]["size"]
        return sum(f["size"] for f in self.files.values())

    def path_in(self, folder: Path) -> Path:
        return folder / self.main if self.main else folder

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "kind": self.kind, "name": self.name,
                           "main": self.main, "files": self.files, "version": self.version,
                           "meta": self.meta, "created_at": self.created_at,
                           "sha256": self.sha256, "size": self.size},
                          indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        return cls(id=d["id"], kind=d["kind"], name=d["name"], main=d["main"],
                   files=d["files"], version=d.get("version"), meta=d.get("meta", {}),
                   created_at=d.get("created_at", 0.0))


class ArtifactCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    def lookup(self, artifact_id: str) -> Manifest | None:
        """The finished artifact, if it is there (a cheap read; no hashing)."""
        try:
            text = (self.folder(artifact_id) / "manifest.json").read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return Manifest.from_json(text)
        except (ValueError, KeyError):
            return None

    @contextlib.asynccontextmanager
    async def lock(self, artifact_id: str, poll: float = 0.05) -> AsyncIterator[None]:
        """Hold the id's lock file (cancellable wait; works across processes)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{artifact_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(poll)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def temp_dir(self, artifact_id: str) -> Path:
        tmp_root = self.root / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{artifact_id[:16]}.", dir=tmp_root))

    def commit(self, artifact_id: str, staged: Path, manifest: Manifest) -> Manifest:
        """Hash the staged files, write the manifest and rename the folder into
        place. Call with the id's lock held."""
        files = {}
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            rel = path.relative_to(staged).as_posix()
            if rel == "manifest.json":
                continue
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        manifest.files = files
        manifest.created_at = manifest.created_at or time.time()
        (staged / "manifest.json").write_text(manifest.to_json())
        final = self.folder(artifact_id)
        if final.exists():  # someone finished it without the lock (should not happen)
            shutil.rmtree(staged, ignore_errors=True)
            return self.lookup(artifact_id) or manifest
        os.chmod(staged, 0o755)
        os.rename(staged, final)
        return manifest

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)
