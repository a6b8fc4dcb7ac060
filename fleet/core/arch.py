"""Firmware architectures, as PXE clients announce them in DHCP option 93.

IANA "Processor Architecture Types". RFC 4578's table swaps 7 and 9 (erratum
4624); firmware in the field sends 7 for x64 UEFI and some sends 9, so both
map to x64 UEFI here.
"""

from __future__ import annotations

from enum import Enum


class FirmwareArch(str, Enum):
    BIOS = "bios"
    UEFI_X86 = "uefi-x86"
    UEFI_X64 = "uefi-x64"
    UEFI_ARM32 = "uefi-arm32"
    UEFI_ARM64 = "uefi-arm64"
    UEFI_X86_HTTP = "uefi-x86-http"
    UEFI_X64_HTTP = "uefi-x64-http"
    UEFI_ARM32_HTTP = "uefi-arm32-http"
    UEFI_ARM64_HTTP = "uefi-arm64-http"
    BIOS_HTTP = "bios-http"
    UNKNOWN = "unknown"

    @property
    def is_uefi(self) -> bool:
        return self.value.startswith("uefi")

    @property
    def is_http_boot(self) -> bool:
        return self.value.endswith("-http")

    @property
    def label(self) -> str:
        """Short text for tables: 'BIOS', 'x64 UEFI', 'ARM64 UEFI HTTP'."""
        return _LABELS[self]


# IANA option 93 code -> arch. Codes not listed are UNKNOWN.
ARCH_BY_CODE: dict[int, FirmwareArch] = {
    0: FirmwareArch.BIOS,
    6: FirmwareArch.UEFI_X86,
    7: FirmwareArch.UEFI_X64,
    9: FirmwareArch.UEFI_X64,  # EFI BC: x64 in practice (erratum 4624)
    10: FirmwareArch.UEFI_ARM32,
    11: FirmwareArch.UEFI_ARM64,
    15: FirmwareArch.UEFI_X86_HTTP,
    16: FirmwareArch.UEFI_X64_HTTP,
    18: FirmwareArch.UEFI_ARM32_HTTP,
    19: FirmwareArch.UEFI_ARM64_HTTP,
    20: FirmwareArch.BIOS_HTTP,
}

# The code fleet's own simulated clients send for each arch.
CODE_BY_ARCH: dict[FirmwareArch, int] = {
    arch: code for code, arch in ARCH_BY_CODE.items() if code != 9
}

_LABELS = {
    FirmwareArch.BIOS: "BIOS",
    FirmwareArch.UEFI_X86: "x86 UEFI",
    FirmwareArch.UEFI_X64: "x64 UEFI",
    FirmwareArch.UEFI_ARM32: "ARM32 UEFI",
    FirmwareArch.UEFI_ARM64: "ARM64 UEFI",
    FirmwareArch.UEFI_X86_HTTP: "x86 UEFI HTTP",
    FirmwareArch.UEFI_X64_HTTP: "x64 UEFI HTTP",
    FirmwareArch.UEFI_ARM32_HTTP: "ARM32 UEFI HTTP",
    FirmwareArch.UEFI_ARM64_HTTP: "ARM64 UEFI HTTP",
    FirmwareArch.BIOS_HTTP: "BIOS HTTP",
    FirmwareArch.UNKNOWN: "unknown",
}


def arch_from_codes(codes: list[int] | tuple[int, ...]) -> FirmwareArch:
    """Option 93 may list several archs; the first known one wins."""
    for code in codes:
        arch = ARCH_BY_CODE.get(code)
        if arch is not None:
            return arch
    return FirmwareArch.UNKNOWN
