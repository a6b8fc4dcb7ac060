"""SYSLINUX/ISOLINUX pieces for BIOS boot media: isolinux.bin, ldlinux.c32
(isolinux 6 needs it beside isolinux.bin) and the isohybrid MBR isohdpfx.bin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import shutil
from pathlib import Path

from fleet.build import tools
from fleet.build.request import Built, verify_binary
from fleet.errors import EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

KIND = "syslinux"

FILES = {
    "isolinux.bin": Path("/usr/lib/ISOLINUX/isolinux.bin"),
    "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    "isohdpfx.bin": Path("/usr/lib/ISOLINUX/isohdpfx.bin"),
}
ISOHDPFX_SIZE = 432  # an MBR boot code area


def sources() -> dict[str, Path]:
    return {name: tools.data_file(path) for name, path in FILES.items()}


def plan(engine: "Engine", req: dict) -> tuple[str, dict]:
    return "syslinux", {"files": {n: tools.fingerprint(p) for n, p in sources().items()}}


def verify(name: str, path: Path) -> None:
    verify_binary(path)
    if name == "isohdpfx.bin" and path.stat().st_size != ISOHDPFX_SIZE:
        raise EnvironmentProblem(f"{path} is {path.stat().st_size} bytes, not an "
                                 f"isohybrid MBR ({ISOHDPFX_SIZE})")


async def build(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    files = sources()
    for i, (name, path) in enumerate(files.items()):
        ctx.check_cancelled()
        ctx.progress(i / len(files), f"copy {name}")
        verify(name, path)
        shutil.copyfile(path, out / name)
        ctx.log(f"{name}: {path.stat().st_size} bytes from {path}")
    versions = {p: tools.package_version(p) for p in ("isolinux", "syslinux-common")}
    return Built(main=None, version=versions["isolinux"],
                 meta={"packages": versions, "sources": {n: str(p) for n, p in files.items()}})
