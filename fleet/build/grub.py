"""GRUB for UEFI boot media: `grub-mkstandalone -O x86_64-efi` with an embedded
grub.cfg (BOOTX64.EFI), and a FAT image efiboot.img (mformat/mcopy) holding
EFI/BOOT/BOOTX64.EFI, plus fleet/ipxe.efi for the default config to chainload.

The default grub.cfg finds `/fleet/ipxe.efi` on any disk (the FAT image or the
ISO 9660 tree) and chainloads the stock iPXE EFI binary. GRUB's `chainloader`
cannot hand a script to an EFI application, so with Debian's ipxe.efi the
machine's script comes from the distributor's proxy offer; fleet/autoexec.ipxe
is put beside it for iPXE builds that read a script next to their binary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
import os
from pathlib import Path

from fleet.build import tools
from fleet.build.ipxe import stock_file
from fleet.build.request import Built, verify_binary
from fleet.errors import EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

KIND = "grub"

DEFAULT_CFG = """\
set timeout=0
echo "fleet: GRUB is looking for iPXE"
search --no-floppy --file --set=root /fleet/ipxe.efi
echo "fleet: chainloading iPXE from ($root)/fleet/ipxe.efi"
chainloader /fleet/ipxe.efi
boot
echo "fleet: could not start iPXE"
sleep 10
"""

# enough for the default config; a custom one gets every module (a larger image)
MODULES = ("normal configfile echo search search_fs_file search_fs_uuid search_label "
           "iso9660 fat part_gpt part_msdos chain sleep test efi_gop efi_uga")
ENV = {"MTOOLS_SKIP_CHECK": "1"}


def _tools() -> dict[str, Path]:
    found = {t: tools.which(t) for t in ("grub-mkstandalone", "mformat", "mcopy", "mmd",
                                         "mdir")}
    tools.data_file(tools.GRUB_EFI_MODULES, "grub-efi-amd64-bin")
    return found


def key(engine: "Engine", req: dict) -> dict:
    found = _tools()
    mods = tools.GRUB_EFI_MODULES
    return {"tools": {t: tools.fingerprint(p) for t, p in found.items()},
            "modules": tools.fingerprint(mods / "normal.mod" if (mods / "normal.mod").exists()
                                         else mods),
            "ipxe_efi": tools.fingerprint(stock_file(engine, req, "ipxe.efi")),
            "cfg": req.get("grub_cfg", DEFAULT_CFG)}


def plan(engine: "Engine", req: dict) -> tuple[str, dict]:
    return "grub-efi", key(engine, req)


async def make_efi(ctx, engine: "Engine", req: dict, out: Path, work: Path, *,
                   script: str | None = None) -> tuple[Path, Path]:
    """BOOTX64.EFI and efiboot.img in `out`; returns their paths."""
    found = _tools()
    env = {**os.environ, **ENV}
    cfg_text = req.get("grub_cfg", DEFAULT_CFG)
    cfg = work / "grub.cfg"
    cfg.write_text(cfg_text)
    efi = out / "BOOTX64.EFI"
    argv = [found["grub-mkstandalone"], "-O", "x86_64-efi", "-o", efi,
            "--locales=", "--fonts=", "--themes="]
    if "grub_cfg" not in req:
        argv.append(f"--install-modules={MODULES}")
    argv.append(f"boot/grub/grub.cfg={cfg}")
    await ctx.run(argv, cwd=work, env=env)
    verify_binary(efi)
    ipxe_efi = stock_file(engine, req, "ipxe.efi")
    verify_binary(ipxe_efi)

    img = out / "efiboot.img"
    payload = efi.stat().st_size + ipxe_efi.stat().st_size
    mib = max(2, math.ceil((payload + (512 << 10)) / (1 << 20)))
    with open(img, "wb") as f:
        f.truncate(mib << 20)
    ctx.log(f"efiboot.img: {mib} MiB FAT")
    await ctx.run([found["mformat"], "-i", img, "-N", "0", "::"], env=env)
    await ctx.run([found["mmd"], "-i", img, "::/EFI", "::/EFI/BOOT", "::/fleet"], env=env)
    await ctx.run([found["mcopy"], "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"], env=env)
    await ctx.run([found["mcopy"], "-i", img, ipxe_efi, "::/fleet/ipxe.efi"], env=env)
    if script:
        auto = work / "autoexec.ipxe"
        auto.write_text(script)
        await ctx.run([found["mcopy"], "-i", img, auto, "::/fleet/autoexec.ipxe"], env=env)
    listing: list[str] = []
    await ctx.run([found["mdir"], "-b", "-i", img, "::/EFI/BOOT"], env=env,
                  on_line=listing.append)
    if not any(line.strip().upper().endswith("/EFI/BOOT/BOOTX64.EFI") for line in listing):
        raise EnvironmentProblem(f"efiboot.img lacks EFI/BOOT/BOOTX64.EFI: {listing}")
    (out / "grub.cfg").write_text(cfg_text)
    return efi, img


async def build(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    ctx.progress(0.1, "grub-mkstandalone")
    await make_efi(ctx, engine, req, out, work)
    ctx.progress(0.9, "verify")
    return Built(main=None, version=tools.package_version("grub-efi-amd64-bin"),
                 meta={"default_cfg": "grub_cfg" not in req,
                       "packages": {p: tools.package_version(p)
                                    for p in ("grub-common", "grub-efi-amd64-bin", "mtools")}})
