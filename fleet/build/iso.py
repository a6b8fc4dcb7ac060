"""A hybrid BIOS+UEFI ISO (xorriso) that starts iPXE with fleet's script.

    BIOS: El Torito isolinux.bin -> isolinux.cfg: KERNEL /ipxe.lkrn, INITRD
          /script.ipxe (iPXE runs the script handed to it as an initrd)
    UEFI: El Torito efiboot.img (FAT) -> EFI/BOOT/BOOTX64.EFI (GRUB standalone)
          -> chainloader /fleet/ipxe.efi
    USB:  isohybrid MBR (isohdpfx.bin) + GPT with the EFI image as a partition

The script retries `dhcp` until it has an address, then chains
http://<distributor>:<http port>/boot/${mac}.ipxe. On the UEFI path GRUB cannot
pass a script to an EFI application: Debian's ipxe.efi takes its script from the
distributor's proxy offer (fleet/autoexec.ipxe sits beside the binary for iPXE
builds that look there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import shutil
from pathlib import Path

from fleet.build import grub, syslinux, tools
from fleet.build.ipxe import stock_file
from fleet.build.request import Built, resolve_script, verify_binary
from fleet.errors import EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

KIND = "iso"

ISOLINUX_CFG = """\
DEFAULT fleet
PROMPT 0
TIMEOUT 0
LABEL fleet
  KERNEL /ipxe.lkrn
  INITRD /script.ipxe
"""


def plan(engine: "Engine", req: dict) -> tuple[str, dict]:
    xorriso = tools.which("xorriso")
    script = resolve_script(engine, req)
    return f"{req.get('label', 'FLEET')}.iso", {
        "label": req.get("label", "FLEET"),
        "script": script,
        "xorriso": tools.fingerprint(xorriso),
        "syslinux": syslinux.plan(engine, req)[1],
        "grub": grub.key(engine, req),
        "ipxe_lkrn": tools.fingerprint(stock_file(engine, req, "ipxe.lkrn")),
    }


def el_torito(report: str) -> list[str]:
    """The platforms of the boot images in `xorriso -report_el_torito plain`."""
    out = []
    for line in report.splitlines():
        if line.startswith("El Torito boot img :"):
            fields = line.split(":", 1)[1].split()
            if len(fields) >= 2:
                out.append(fields[1])
    return out


async def build(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    xorriso = tools.which("xorriso")
    label = req.get("label", "FLEET")
    script = resolve_script(engine, req)
    root = work / "root"
    (root / "isolinux").mkdir(parents=True)
    (root / "fleet").mkdir()
    (root / "boot").mkdir()

    ctx.progress(0.05, "stage BIOS files")
    files = syslinux.sources()
    for name in ("isolinux.bin", "ldlinux.c32"):
        syslinux.verify(name, files[name])
        shutil.copyfile(files[name], root / "isolinux" / name)
    (root / "isolinux" / "isolinux.cfg").write_text(ISOLINUX_CFG)
    lkrn = stock_file(engine, req, "ipxe.lkrn")
    verify_binary(lkrn)
    shutil.copyfile(lkrn, root / "ipxe.lkrn")
    (root / "script.ipxe").write_text(script)

    ctx.progress(0.15, "GRUB EFI image")
    efi_out = work / "efi"
    efi_out.mkdir()
    _, img = await grub.make_efi(ctx, engine, req, efi_out, work, script=script)
    shutil.copyfile(img, root / "boot" / "efiboot.img")
    shutil.copyfile(stock_file(engine, req, "ipxe.efi"), root / "fleet" / "ipxe.efi")
    (root / "fleet" / "autoexec.ipxe").write_text(script)
    ctx.check_cancelled()

    ctx.progress(0.6, "xorriso")
    iso = out / f"{label}.iso"
    await ctx.run([xorriso, "-as", "mkisofs", "-o", iso, "-V", label, "-J", "-R",
                   "-isohybrid-mbr", files["isohdpfx.bin"],
                   "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
                   "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                   "-eltorito-alt-boot", "-e", "boot/efiboot.img", "-no-emul-boot",
                   "-isohybrid-gpt-basdat", root], cwd=work)

    ctx.progress(0.9, "verify")
    verify_binary(iso)
    report: list[str] = []
    await ctx.run([xorriso, "-indev", iso, "-report_el_torito", "plain"], cwd=work,
                  on_line=report.append)
    platforms = el_torito("\n".join(report))
    if "BIOS" not in platforms or "UEFI" not in platforms:
        raise EnvironmentProblem(f"{iso.name} lacks a BIOS or UEFI boot image: {platforms}")
    shutil.copyfile(root / "script.ipxe", out / "script.ipxe")
    versions = {p: tools.package_version(p) for p in
                ("xorriso", "isolinux", "syslinux-common", "grub-efi-amd64-bin", "ipxe")}
    return Built(main=iso.name, version=versions["ipxe"],
                 meta={"label": label, "el_torito": platforms, "packages": versions,
                       "script": script})
