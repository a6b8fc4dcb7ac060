"""A build request: validated, normalized to plain JSON (it is the job's inputs,
so `job retry` rebuilds from it), and the pieces every builder shares.

Fields (all optional but `kind`):
    kind          ipxe | grub | syslinux | iso
    label         ISO volume label (iso; default FLEET)
    distributor   a site's distributor: the script chains to its address and HTTP
                  port, and the artifact is assigned to it
    script        iPXE script text (overrides the generated one)
    chain_url     http:// URL the generated script chains (default: the
                  distributor's /boot/${mac}.ipxe)
    ipxe_dir      folder with stock iPXE binaries (default: the ipxe package's;
                  the distributor's `ipxe_dir` when the profile sets one)
    ipxe_src      iPXE source tree (its src/ folder or the repo): compile mode
    ipxe_targets  make targets in compile mode (default [bin/undionly.kpxe])
    grub_cfg      grub.cfg text for the grub builder
    wiper_root    where the wiper's kernel and busybox-static are installed or
                  unpacked (default /; see fleet.build.wiper)
    wiper_modules kernel modules the wiper loads (default: common disks and NICs)
Keys starting with "_" (e.g. _retry_of) are bookkeeping, never part of the key.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.build.script import boot_script, chain_url, check_script, check_url
from fleet.errors import BadInput, EnvironmentProblem, UnknownTarget

if TYPE_CHECKING:
    from fleet.engine import Engine

KINDS = ("ipxe", "grub", "syslinux", "iso", "wiper")
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


def normalize(engine: "Engine", kind: str, **opts: Any) -> dict:
    if kind not in KINDS:
        raise BadInput(f"unknown build kind {kind!r}; one of: {', '.join(KINDS)}")
    req: dict[str, Any] = {"kind": kind}
    label = opts.get("label")
    if label is not None:
        if not _LABEL.match(label):
            raise BadInput(f"label {label!r}: 1-32 of A-Z a-z 0-9 _ . -")
        req["label"] = label
    elif kind == "iso":
        req["label"] = "FLEET"
    name = opts.get("distributor")
    if name:
        site = _site(engine, name)
        if site.distributor is None:
            raise BadInput(f"site {name!r} has no distributor")
        req["distributor"] = name
    if opts.get("script") is not None:
        req["script"] = check_script(opts["script"])
    if opts.get("chain_url"):
        req["chain_url"] = check_url(opts["chain_url"])
    for key in ("ipxe_dir", "ipxe_src", "wiper_root"):
        value = opts.get(key)
        if value:
            p = Path(value).expanduser().resolve()
            if not p.is_dir():
                raise BadInput(f"{key.replace('_', '-')} {value}: no such folder")
            req[key] = str(p)
    if opts.get("ipxe_targets"):
        req["ipxe_targets"] = [str(t) for t in opts["ipxe_targets"]]
    if opts.get("wiper_modules"):
        from fleet.build.wiper import check_modules

        req["wiper_modules"] = check_modules(opts["wiper_modules"])
    if opts.get("grub_cfg") is not None:
        req["grub_cfg"] = str(opts["grub_cfg"])
    for key, value in opts.items():
        if key.startswith("_"):
            req[key] = value
    return req


def key_fields(req: dict) -> dict:
    """What of a request goes into the artifact id (not bookkeeping, not the
    distributor name: that only decides the script, which is keyed itself)."""
    return {k: v for k, v in req.items() if not k.startswith("_") and k != "distributor"}


def _site(engine: "Engine", name: str):
    try:
        return engine.profile.site(name)
    except KeyError:
        known = ", ".join(s.name for s in engine.profile.sites if s.distributor) or "none"
        raise UnknownTarget(f"unknown distributor {name!r}; the profile has: {known}") from None


def distributor_config(engine: "Engine", req: dict):
    """The distributor the request names, else the profile's first one (or None)."""
    if req.get("distributor"):
        return _site(engine, req["distributor"]).distributor
    for site in engine.profile.sites:
        if site.distributor is not None:
            return site.distributor
    return None


def resolve_script(engine: "Engine", req: dict) -> str:
    """The iPXE script the media runs: given, or chaining the distributor."""
    if req.get("script"):
        return req["script"]
    url = req.get("chain_url")
    if url is None:
        d = distributor_config(engine, req)
        if d is None:
            raise BadInput("no distributor to chain to: give --distributor, --chain-url or "
                           "--script")
        url = chain_url(d.address, d.ports.http)
    return boot_script(url, req.get("label", "fleet"))


def ipxe_dir(engine: "Engine", req: dict) -> Path | None:
    if req.get("ipxe_dir"):
        return Path(req["ipxe_dir"])
    if req.get("distributor"):
        d = distributor_config(engine, req)
        if d is not None and d.ipxe_dir is not None:
            return Path(d.ipxe_dir)
    return None


@dataclass
class Built:
    """What a builder hands back: the main file (or None: the folder is the
    artifact), the version it records, and extra facts."""

    main: str | None
    version: str | None
    meta: dict


# -- magic checks ---------------------------------------------------------------

def verify_binary(path: Path) -> str:
    """Check a boot binary is what its name says; returns a short description."""
    data = path.read_bytes()[:0x9000]
    size = path.stat().st_size
    name = path.name
    if size == 0:
        raise EnvironmentProblem(f"{path} is empty")

    def bad(what: str) -> EnvironmentProblem:
        return EnvironmentProblem(f"{path} is not {what}")

    if name.endswith(".efi") or name.upper().endswith(".EFI"):
        if data[:2] != b"MZ" or len(data) < 0x40:
            raise bad("a PE/EFI binary (no MZ header)")
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        if data[pe:pe + 4] != b"PE\0\0":
            raise bad("a PE/EFI binary (no PE signature)")
        return "PE32+ EFI application"
    if name.endswith(".lkrn"):
        if data[0x1FE:0x200] != b"\x55\xaa" or data[0x202:0x206] != b"HdrS":
            raise bad("a Linux-bootable kernel (no HdrS)")
        return "Linux boot protocol image"
    if name.endswith((".kpxe", ".kkpxe", ".pxe")):
        if data[:1] != b"\xea" or size > 4 << 20:
            raise bad("a PXE network bootstrap program")
        return "PXE NBP"
    if name.endswith(".c32"):
        if data[:4] != b"\x7fELF":
            raise bad("a syslinux module (ELF)")
        return "syslinux module"
    if name.endswith(".iso"):
        if data[0x8001:0x8006] != b"CD001":
            raise bad("an ISO 9660 image")
        return "ISO 9660"
    return "data"
