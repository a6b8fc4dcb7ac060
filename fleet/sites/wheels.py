"""The wheels a site host installs fleet from, made on the console's side: the
site host needs no package index, only what is copied to it.

The running fleet's own source is what gets built (an editable or local-directory
install: a copy of its tree, so the build writes nothing into the checkout; a
wheel file it was installed from; else `fleet==VERSION` from the index pip is
configured with), plus every dependency's wheel, by `python -m pip wheel`. pip
uses this machine's own configuration (index, find-links, constraints).

Built wheels are kept in a cache folder named after the version and, for a
source tree, a digest of its files: the same version built from changed code is
built again, an unchanged one is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import fleet
from fleet.errors import BadInput, EnvironmentProblem

#: what a copy of the source tree leaves out (never part of a wheel): these at its
#: top only (fleet/build is a package), those anywhere
SKIP_TOP = {".git", ".venv", "tests", "build", "dist", ".pytest_cache", ".hypothesis"}
SKIP_ANYWHERE = ("__pycache__", "*.egg-info", "*.db", "*.db-wal", "*.db-shm")
DONE = "complete"  # written last: a cache folder without it is rebuilt


@dataclass(frozen=True)
class Wheels:
    folder: Path
    version: str
    files: tuple[Path, ...]

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def running_version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:
        raise EnvironmentProblem("this fleet is not an installed package (no version to "
                                 "install at a site); install it with pip first") from None


def source() -> tuple[str, Path | None]:
    """What pip builds: (requirement, source tree or None). A local directory (an
    editable install) or a wheel file the running fleet came from, else the index."""
    version = running_version()
    tree = Path(fleet.__file__).resolve().parents[1]
    if (tree / "pyproject.toml").is_file():  # running from a source tree (editable)
        return str(tree), tree
    for dist in metadata.distributions(name="fleet"):
        text = dist.read_text("direct_url.json")
        url = json.loads(text).get("url", "") if text else ""
        path = Path(unquote(urlparse(url).path))
        if url.startswith("file://") and path.is_file():  # installed from this wheel
            return str(path), None
    return f"fleet=={version}", None


def prepared(folder: Path) -> Wheels:
    """`--wheels DIR`: wheels made elsewhere; fleet's own at this version must be there."""
    version = running_version()
    if not folder.is_dir():
        raise BadInput(f"--wheels {folder}: no such folder")
    files = tuple(sorted(folder.glob("*.whl")))
    if not any(_is_fleet(f, version) for f in files):
        raise BadInput(f"--wheels {folder}: no fleet-{version}-*.whl there (this console "
                       f"runs fleet {version})")
    return Wheels(folder, version, files)


def cached_or_built(cache_dir: Path, say=print) -> Wheels:
    """The wheels for the running fleet from `cache_dir`, built there first when
    missing (or built from other code)."""
    version = running_version()
    requirement, tree = source()
    key = version + (f"-{tree_digest(tree)[:12]}" if tree is not None else "")
    folder = cache_dir / f"wheels-{key}"
    if not (folder / DONE).exists():
        # built beside, then renamed: two installs at once never mix their files
        cache_dir.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=cache_dir))
        try:
            say(f"building wheels of fleet {version} and its dependencies into {folder}")
            if tree is not None:
                with tempfile.TemporaryDirectory(prefix="fleet-src-") as tmp:
                    copy = Path(tmp) / "fleet"
                    shutil.copytree(tree, copy, symlinks=True, ignore=skipper(tree))
                    _pip_wheel(str(copy), building)
            else:
                _pip_wheel(requirement, building)
            (building / DONE).write_text(requirement + "\n")
            if not (folder / DONE).exists():  # an unfinished one
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # another install's finished one stays
                building.rename(folder)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    files = tuple(sorted(folder.glob("*.whl")))
    if not any(_is_fleet(f, version) for f in files):
        raise EnvironmentProblem(f"pip built no fleet-{version} wheel into {folder}")
    return Wheels(folder, version, files)


def skipper(tree: Path):
    """copytree's ignore function for a source tree at `tree`."""
    anywhere = shutil.ignore_patterns(*SKIP_ANYWHERE)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = set(anywhere(folder, names))
        if Path(folder) == tree:
            skip |= SKIP_TOP & set(names)
        return skip
    return ignore


def tree_digest(tree: Path) -> str:
    """sha256 over the paths and contents of what a wheel is built from."""
    digest = hashlib.sha256()
    ignore = skipper(tree)
    stack = [tree]
    while stack:
        here = stack.pop()
        names = sorted(p.name for p in here.iterdir())
        names = [n for n in names if n not in ignore(str(here), names)]
        for name in names:
            path = here / name
            if path.is_symlink():
                digest.update(f"{path.relative_to(tree)} -> {path.readlink()}\n".encode())
            elif path.is_dir():
                stack.append(path)
            else:
                digest.update(f"{path.relative_to(tree)}\n".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _pip_wheel(requirement: str, folder: Path) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
            "--wheel-dir", str(folder), requirement]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvironmentProblem(f"pip wheel {requirement}: {err}") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit {done.returncode}"
        raise EnvironmentProblem(f"building the wheels failed (pip wheel {requirement}): {last}")


def _is_fleet(path: Path, version: str) -> bool:
    return path.name.startswith(f"fleet-{version}-")
