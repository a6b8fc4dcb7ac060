"""The boot policy: "what does this machine boot now?"

One question, asked by the HTTP service with the machine as the store has it;
the answer depends only on the machine's state and the profile, so it is pure
and the protocol servers stay free of lifecycle logic:

| state                                   | boots                                  |
|-----------------------------------------|----------------------------------------|
| unknown MAC (first sighting)            | hold loop                              |
| discovered                              | hold loop                              |
| failed (with or without a lease)        | hold loop (no automatic reinstall;     |
|                                         | the operator releases or re-leases)    |
| stalled without a lease                 | hold loop                              |
| leased, provisioning, stalled + lease   | install (kind `script`: the rendered   |
|                                         | template as an iPXE script)            |
| provisioned                             | local disk                             |
| wiping                                  | wipe                                   |

A lease whose deployment the profile no longer has holds the machine (with
the reason), rather than guessing.

`facts_from_query` cleans what the hold loop reports in its query string.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from fleet.core.arch import FirmwareArch
from fleet.core.model import Machine, MachineState
from fleet.core.config import DeploymentConfig, Profile

S = MachineState

MAX_FACT_LENGTH = 128
INFO_FACTS = ("serial", "manufacturer", "product", "buildarch", "platform")


class Action(str, Enum):
    HOLD = "hold"
    INSTALL = "install"  # kernel + initrd + cmdline
    SCRIPT = "script"  # deployment kind "script": its rendered template
    LOCAL = "local"  # boot from the local disk
    WIPE = "wipe"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    deployment: DeploymentConfig | None = None

    @property
    def installs(self) -> bool:
        return self.action in (Action.INSTALL, Action.SCRIPT)


def decide(machine: Machine | None, profile: Profile) -> Decision:
    if machine is None:
        return Decision(Action.HOLD, "unknown machine")
    state, lease = machine.state, machine.lease
    if state is S.PROVISIONED:
        return Decision(Action.LOCAL, "provisioned")
    if state is S.WIPING:
        return Decision(Action.WIPE, "released with wipe")
    if state in (S.LEASED, S.PROVISIONING, S.STALLED) and lease is not None and lease.active:
        try:
            deployment = profile.deployment(lease.deployment)
        except KeyError:
            return Decision(Action.HOLD, f"leased to {lease.deployment!r}, which the profile "
                                         f"no longer has")
        if deployment.kind == "script":
            if deployment.template is None:
                return Decision(Action.HOLD, f"deployment {deployment.name} is a script "
                                             f"without a template")
            return Decision(Action.SCRIPT, f"{state.value}: {deployment.name} script",
                            deployment)
        if not deployment.kernel:
            return Decision(Action.HOLD, f"deployment {deployment.name} has no kernel")
        return Decision(Action.INSTALL, f"{state.value}: install {deployment.name}", deployment)
    if state is S.FAILED:
        return Decision(Action.HOLD, "failed; waiting for the operator")
    return Decision(Action.HOLD, f"{state.value}; waiting to be leased")


# -- facts the hold loop reports ------------------------------------------------------

def clean_fact(value: Any) -> str | None:
    """A reported value if it is printable ASCII of at most 128 characters; else None.

    iPXE expands a setting it does not have to "", so empty means "not reported".
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_FACT_LENGTH:
        return None
    if not all(" " <= c <= "~" for c in value):
        return None
    return value


def facts_from_query(query: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `engine.record_sighting` from the hold loop's query.

    Unknown keys are ignored, bad values dropped (never stored, never echoed):
    uuid must parse as a UUID and not be all zeros or all ones; everything else
    is printable ASCII of at most 128 characters.
    """
    facts: dict[str, Any] = {}
    raw_uuid = clean_fact(query.get("uuid"))
    if raw_uuid:
        try:
            parsed = uuidlib.UUID(raw_uuid)
        except ValueError:
            parsed = None
        # all zeros / all ones: firmware that has no UUID (QEMU without -uuid)
        if parsed is not None and parsed.int not in (0, (1 << 128) - 1):
            facts["uuid"] = str(parsed)
    version = clean_fact(query.get("ipxe"))
    if version:
        facts["ipxe_version"] = version
    info = {}
    for key in INFO_FACTS:
        value = clean_fact(query.get(key))
        if value is not None:
            info[key] = value
    if info:
        facts["info"] = info
    return facts


_IPXE_ARCH = {
    ("pcbios", "i386"): FirmwareArch.BIOS,
    ("pcbios", "x86_64"): FirmwareArch.BIOS,
    ("efi", "x86_64"): FirmwareArch.UEFI_X64,
    ("efi", "i386"): FirmwareArch.UEFI_X86,
    ("efi", "arm64"): FirmwareArch.UEFI_ARM64,
    ("efi", "arm32"): FirmwareArch.UEFI_ARM32,
}


def arch_from_ipxe(platform: str | None, buildarch: str | None) -> FirmwareArch:
    """iPXE's ${platform}/${buildarch} as a firmware arch (UNKNOWN if unrecognised)."""
    return _IPXE_ARCH.get((platform or "", buildarch or ""), FirmwareArch.UNKNOWN)
