"""Boot files a distributor serves: the iPXE binaries and its TFTP root.

`BootFiles(profile, site)` answers two questions, both from the file system
only (no database, quick enough for the DHCP hot path):

- `resolve(name)`: the file behind a requested name, or None. Names are
  sanitised like the TFTP server does (`fleet.boot.tftp.sanitize_filename`):
  no `..`, no NUL or control characters, leading slashes dropped; a path that
  resolves (through symlinks) outside the folder it was found in is refused.
  Search order: the iPXE binaries (`undionly.kpxe`, `ipxe.pxe`, `ipxe.efi`,
  `snponly.efi`, `ipxe.lkrn`, `ipxe-arm64.efi`) from the distributor's
  `ipxe_dir` when set, else from the system iPXE package (`/usr/lib/ipxe/`,
  `/boot/`); then the distributor's `tftp_root`; then `extra_dirs`.
- `ipxe_binary_for(arch)`: which iPXE binary a non-iPXE PXE client of that
  firmware gets (BIOS `undionly.kpxe`, x64 UEFI `ipxe.efi` or `snponly.efi`,
  ARM64 UEFI `ipxe-arm64.efi`), or None when fleet has none for it (then the
  proxy does not answer, and another server on the network may).

`tftp_resolver()` adapts it to `TftpServer(resolver=...)`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from fleet.boot.tftp import FileSource, Refused, sanitize_filename
from fleet.boot.tftp_packets import ErrorCode
from fleet.core.arch import FirmwareArch

log = logging.getLogger(__name__)

#: The iPXE binaries fleet knows by name.
IPXE_BINARIES = ("undionly.kpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi", "ipxe.lkrn",
                 "ipxe-arm64.efi")
#: Where Debian's `ipxe` package puts them (`/boot` holds ipxe.efi and ipxe.lkrn).
SYSTEM_IPXE_DIRS = (Path("/usr/lib/ipxe"), Path("/boot"))

_BIOS_BINARY = "undionly.kpxe"
_ARM64_BINARY = "ipxe-arm64.efi"
_X64_BINARIES = ("ipxe.efi", "snponly.efi")


class BootFiles:
    """The files one site's distributor serves (see the module docstring)."""

    def __init__(self, profile, site_name: str, *, extra_dirs: Iterable[Path | str] = (),
                 system_dirs: Iterable[Path | str] = SYSTEM_IPXE_DIRS,
                 uefi_binary: str = "ipxe.efi"):
        site = profile.site(site_name)
        cfg = site.distributor
        self.site = site_name
        self.ipxe_dir = Path(cfg.ipxe_dir) if cfg is not None and cfg.ipxe_dir else None
        self.tftp_root = Path(cfg.tftp_root) if cfg is not None and cfg.tftp_root else None
        self.extra_dirs = tuple(Path(d) for d in extra_dirs)
        self.system_dirs = tuple(Path(d) for d in system_dirs)
        if uefi_binary not in _X64_BINARIES:
            raise ValueError(f"uefi_binary must be one of {', '.join(_X64_BINARIES)}")
        self.uefi_binary = uefi_binary
        # fleet.boot.assigned.AssignedArtifacts while the HTTP service runs: names
        # not found above resolve to the distributor's assigned artifacts
        self.assigned = None

    # -- lookups ------------------------------------------------------------------

    def ipxe_dirs(self) -> tuple[Path, ...]:
        """Where iPXE binaries come from: the configured folder, else the system's."""
        return (self.ipxe_dir,) if self.ipxe_dir is not None else self.system_dirs

    def search_dirs(self) -> tuple[Path, ...]:
        """Folders searched for names that are not iPXE binaries."""
        return tuple(d for d in (self.tftp_root, *self.extra_dirs) if d is not None)

    def resolve(self, name: str | bytes) -> Path | None:
        """The file to serve for `name`, or None (unsafe name or no such file)."""
        try:
            return self.find(name)
        except Refused as err:
            log.info("boot file %r refused: %s", name, err.reason)
            return None

    def find(self, name: str | bytes) -> Path | None:
        """As `resolve`, but an unsafe name raises `fleet.boot.tftp.Refused`."""
        clean = sanitize_filename(name)
        if clean in IPXE_BINARIES:
            for folder in self.ipxe_dirs():
                # Fixed names in a folder the operator (or the package) chose:
                # symlinks there are trusted (Debian links some of them).
                path = folder / clean
                if path.is_file():
                    return path
        for folder in self.search_dirs():
            path = _confined(folder, clean)
            if path is not None:
                return path
        if self.assigned is not None:
            return self.assigned.find(clean)
        return None

    def ipxe_binary_for(self, arch: FirmwareArch) -> str | None:
        """The iPXE binary a (non-iPXE) PXE client of `arch` gets, or None."""
        if arch is FirmwareArch.BIOS:
            wanted: tuple[str, ...] = (_BIOS_BINARY,)
        elif arch is FirmwareArch.UEFI_X64:
            other = [b for b in _X64_BINARIES if b != self.uefi_binary]
            wanted = (self.uefi_binary, *other)
        elif arch is FirmwareArch.UEFI_ARM64:
            wanted = (_ARM64_BINARY,)
        else:
            return None
        for name in wanted:
            if self.find(name) is not None:
                return name
        return None

    def http_boot_binary_for(self, arch: FirmwareArch) -> str | None:
        """The iPXE binary a UEFI HTTP Boot client gets over HTTP, or None."""
        plain = {FirmwareArch.UEFI_X64_HTTP: FirmwareArch.UEFI_X64,
                 FirmwareArch.UEFI_ARM64_HTTP: FirmwareArch.UEFI_ARM64}.get(arch)
        return None if plain is None else self.ipxe_binary_for(plain)

    # -- adapters -----------------------------------------------------------------

    def tftp_resolver(self):
        """`resolver(name, client) -> FileSource | None` for `TftpServer`."""

        def resolver(name: str, client) -> FileSource:
            path = self.find(name)
            if path is None:
                raise Refused(ErrorCode.FILE_NOT_FOUND, "file not found")
            return FileSource(path=path)

        return resolver


def _confined(folder: Path, relative: str) -> Path | None:
    """folder/relative if it is a regular file whose real path stays in folder."""
    try:
        root = os.path.realpath(folder)
    except OSError:
        return None
    prefix = root if root.endswith(os.sep) else root + os.sep
    real = os.path.realpath(os.path.join(root, relative))
    if not real.startswith(prefix):
        raise Refused(ErrorCode.ACCESS_VIOLATION, "path resolves outside the served folder")
    if not os.path.isfile(real):
        return None
    return Path(real)
