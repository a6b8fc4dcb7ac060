"""iPXE binaries for every platform.

Stock mode (default): copy the binaries of the system's `ipxe` package (or a
configured folder), check their magic and record the package version and each
file's sha256. Compile mode (`ipxe_src`: an iPXE source tree): `make -C <src>
bin/undionly.kpxe EMBED=<script>` with the media's script embedded, progress
read from make's `[BUILD]`/`[LD]`/`[BIN]` lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import os
import re
import shutil
from pathlib import Path

from fleet.build import tools
from fleet.build.request import Built, ipxe_dir, resolve_script, verify_binary
from fleet.errors import BadInput, EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

KIND = "ipxe"

#: stock file name -> where the Debian package installs it
STOCK = {
    "undionly.kpxe": Path("/usr/lib/ipxe/undionly.kpxe"),
    "ipxe.pxe": Path("/usr/lib/ipxe/ipxe.pxe"),
    "snponly.efi": Path("/usr/lib/ipxe/snponly.efi"),
    "ipxe.efi": Path("/boot/ipxe.efi"),
    "ipxe.lkrn": Path("/boot/ipxe.lkrn"),
}

DEFAULT_TARGETS = ["bin/undionly.kpxe"]
_STEP = re.compile(r"^\s*\[([A-Z]+)\]\s+(\S+)")


def stock_sources(folder: Path | None) -> dict[str, Path]:
    """name -> path of the stock binaries to use (EnvironmentProblem if none)."""
    if folder is None:
        for name, path in STOCK.items():
            tools.data_file(path, "ipxe")
        return dict(STOCK)
    found = {n: folder / n for n in STOCK if (folder / n).is_file()}
    if not found:
        raise EnvironmentProblem(
            f"no iPXE binaries in {folder} (expected some of: {', '.join(STOCK)})")
    return found


def stock_file(engine: "Engine", req: dict, name: str) -> Path:
    """One stock binary (ipxe.lkrn, ipxe.efi) for the media builders."""
    sources = stock_sources(ipxe_dir(engine, req))
    if name not in sources:
        raise EnvironmentProblem(f"{name} not found in the iPXE folder "
                                 f"{ipxe_dir(engine, req)}")
    return sources[name]


def src_dir(req: dict) -> Path:
    src = Path(req["ipxe_src"])
    if (src / "src" / "Makefile").is_file():
        src = src / "src"
    if not (src / "Makefile").is_file():
        raise BadInput(f"ipxe-src {req['ipxe_src']}: no Makefile (give iPXE's src/ folder)")
    return src


def tree_fingerprint(src: Path) -> str:
    """A cheap identity of a source tree: names, sizes, mtimes (build outputs
    under bin*/ left out), plus the git HEAD when there is one."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        if rel == ".":
            dirnames[:] = [d for d in dirnames
                           if not (d == "bin" or d.startswith("bin-") or d == ".git")]
        dirnames.sort()
        for fname in sorted(filenames):
            st = os.stat(os.path.join(dirpath, fname))
            h.update(f"{rel}/{fname}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    head = src.parent / ".git" / "HEAD"
    if head.is_file():
        h.update(head.read_bytes())
    return h.hexdigest()


def plan(engine: "Engine", req: dict) -> tuple[str, dict]:
    if req.get("ipxe_src"):
        src = src_dir(req)
        make = tools.which("make")
        return "ipxe-compiled", {
            "mode": "compile", "src": str(src), "tree": tree_fingerprint(src),
            "targets": req.get("ipxe_targets", DEFAULT_TARGETS),
            "script": resolve_script(engine, req), "make": tools.fingerprint(make)}
    sources = stock_sources(ipxe_dir(engine, req))
    return "ipxe", {"mode": "stock",
                    "files": {n: tools.fingerprint(p) for n, p in sorted(sources.items())}}


async def build(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    if req.get("ipxe_src"):
        return await _compile(ctx, engine, req, out, work)
    folder = ipxe_dir(engine, req)
    sources = stock_sources(folder)
    files = {}
    for i, (name, path) in enumerate(sorted(sources.items())):
        ctx.check_cancelled()
        ctx.progress(i / len(sources), f"copy {name}")
        what = verify_binary(path)
        shutil.copyfile(path, out / name)
        ctx.log(f"{name}: {what}, {path.stat().st_size} bytes, from {path}")
        files[name] = str(path)
    version = tools.package_version("ipxe") if folder is None else None
    return Built(main=None, version=version,
                 meta={"mode": "stock", "source": str(folder) if folder else "package ipxe",
                       "sources": files})


async def _compile(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    src = src_dir(req)
    make = tools.which("make")
    targets = req.get("ipxe_targets", DEFAULT_TARGETS)
    script = work / "embed.ipxe"
    script.write_text(resolve_script(engine, req))
    total = sum(1 for p in src.rglob("*") if p.suffix in (".c", ".S")
                and not p.relative_to(src).parts[0].startswith("bin")) or 1
    built = 0
    weights = {"AR": 0.85, "LD": 0.9, "BIN": 0.93, "ZINFO": 0.94, "ZBIN": 0.95,
               "FINISH": 0.98}

    def on_line(line: str) -> None:
        nonlocal built
        m = _STEP.match(line)
        if not m:
            return
        step, target = m.groups()
        if step in ("BUILD", "DEPS"):
            built += step == "BUILD"
            ctx.progress(0.05 + 0.75 * min(1.0, built / total), f"compile {target}")
        elif step in weights:
            ctx.progress(weights[step], f"{step.lower()} {target}")

    ctx.progress(0.02, "make")
    jobs = str(min(2, os.cpu_count() or 1))
    await ctx.run([make, "-C", src, "-j", jobs, *targets, f"EMBED={script}"], cwd=src,
                  on_line=on_line)
    produced = {}
    for target in targets:
        path = src / target
        if not path.is_file():
            raise EnvironmentProblem(f"make finished but {path} is missing")
        verify_binary(path)
        shutil.copyfile(path, out / path.name)
        produced[path.name] = target
    shutil.copyfile(script, out / "embed.ipxe")
    version = None
    git = shutil.which("git")
    if git and (src.parent / ".git").exists():
        import subprocess
        r = subprocess.run([git, "-C", str(src), "describe", "--always", "--dirty"],
                           capture_output=True, text=True)
        version = r.stdout.strip() or None
    return Built(main=None, version=version,
                 meta={"mode": "compile", "src": str(src), "targets": produced})
