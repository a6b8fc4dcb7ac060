"""The outside tools and data files the builders use, and what to install when
one is missing.

A missing tool is an environment problem (exit 3) whose message names the
Debian package: "xorriso not found: apt-get install xorriso". Lookups are
cheap (PATH search and stat, no subprocess), so the cache can fingerprint the
tools on every request and still answer a cache hit in a few milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import EnvironmentProblem

#: tool (command name) -> Debian package providing it
TOOL_PACKAGES: dict[str, str] = {
    "xorriso": "xorriso",
    "grub-mkstandalone": "grub-common",
    "mformat": "mtools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "make": "make",
    "ssh-keygen": "openssh-client",
    "dpkg-query": "dpkg",
}

#: data files -> Debian package
FILE_PACKAGES: dict[str, str] = {
    "/usr/lib/ISOLINUX/isolinux.bin": "isolinux",
    "/usr/lib/ISOLINUX/isohdpfx.bin": "isolinux",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32": "syslinux-common",
    "/usr/lib/grub/x86_64-efi": "grub-efi-amd64-bin",
    "/usr/lib/ipxe/undionly.kpxe": "ipxe",
    "/usr/lib/ipxe/ipxe.pxe": "ipxe",
    "/usr/lib/ipxe/snponly.efi": "ipxe",
    "/boot/ipxe.efi": "ipxe",
    "/boot/ipxe.lkrn": "ipxe",
}

GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")


def missing(what: str, package: str) -> EnvironmentProblem:
    return EnvironmentProblem(f"{what} not found: apt-get install {package}")


def which(tool: str) -> Path:
    """The tool's absolute path on PATH, or EnvironmentProblem naming its package."""
    found = shutil.which(tool)
    if found is None:
        raise missing(tool, TOOL_PACKAGES.get(tool, tool))
    return Path(found)


def data_file(path: str | Path, package: str | None = None) -> Path:
    """A file or folder a package installs; EnvironmentProblem naming it if absent."""
    p = Path(path)
    if not p.exists():
        raise missing(str(p), package or FILE_PACKAGES.get(str(p), "the package providing it"))
    return p


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a tool or input file cheaply: resolved path, size, mtime."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "Fingerprint":
        real = Path(os.path.realpath(path))
        st = real.stat()
        return cls(str(real), st.st_size, st.st_mtime_ns)

    def as_list(self) -> list:
        return [self.path, self.size, self.mtime_ns]


def fingerprint(path: Path) -> list:
    return Fingerprint.of(path).as_list()


_package_versions: dict[str, str | None] = {}


def package_version(package: str) -> str | None:
    """The installed Debian version of `package` (dpkg-query), cached per process."""
    if package in _package_versions:
        return _package_versions[package]
    version = None
    exe = shutil.which("dpkg-query")
    if exe:
        try:
            out = subprocess.run([exe, "-W", "-f=${Version}", package], capture_output=True,
                                 text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                version = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            version = None
    _package_versions[package] = version
    return version

