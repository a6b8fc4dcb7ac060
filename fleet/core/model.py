"""The domain model: plain, immutable records with no I/O.

Sites, jumps (with their `via` chains) and deployments are static: they live in
`fleet.core.config` (SiteConfig, JumpConfig, DeploymentConfig...), which a
profile is parsed into. These records are the things fleet tracks
at run time and keeps in the store: machines and their leases, nodes with
pinned host keys, jobs, artifacts, distributors with the operator's on/off,
events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Mapping

from fleet.core.arch import FirmwareArch


class MachineState(str, Enum):
    DISCOVERED = "discovered"  # unleased, held in the wait loop
    LEASED = "leased"  # an operator gave it a deployment; next boot installs
    PROVISIONING = "provisioning"  # it fetched its install script
    PROVISIONED = "provisioned"  # it called home; it is a node now
    WIPING = "wiping"  # released with --wipe; next boot clears its disk
    FAILED = "failed"  # something said so, with a reason
    STALLED = "stalled"  # no progress within the profile's stall_after


#: States in which a machine holds a lease.
LEASED_STATES = frozenset(
    {MachineState.LEASED, MachineState.PROVISIONING, MachineState.PROVISIONED}
)


@dataclass(frozen=True)
class Lease:
    """A machine given to a deployment. `ended_at` is set when it is released."""

    id: int
    mac: str
    deployment: str
    hostname: str
    address: str | None
    created_at: float
    install_started_at: float | None = None
    completed_at: float | None = None
    ended_at: float | None = None
    token_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True)
class Machine:
    """A MAC address seen PXE booting, and where it is in its lifecycle."""

    mac: str
    state: MachineState = MachineState.DISCOVERED
    state_since: float = 0.0
    first_seen: float = 0.0
    last_seen: float = 0.0
    uuid: str | None = None
    arch: FirmwareArch = FirmwareArch.UNKNOWN
    vendor_class: str | None = None
    nic_vendor: str | None = None
    ipxe_version: str | None = None
    ipxe_busid: str | None = None
    distributor: str | None = None
    interface: str | None = None
    last_ip: str | None = None
    stage: str | None = None  # "firmware" or "ipxe": where it was last seen
    reason: str | None = None  # why it failed or stalled
    info: Mapping[str, str] = field(default_factory=dict)  # serial, product...
    lease: Lease | None = None

    def with_(self, **changes: Any) -> "Machine":
        return replace(self, **changes)


@dataclass(frozen=True)
class HostKey:
    """An SSH host public key pinned for a node (not for an address)."""

    key_type: str  # "ssh-ed25519"
    key: str  # base64 body
    fingerprint: str  # "SHA256:..."
    source: str  # "callhome", "known_hosts", "accept-new", "profile"
    added_at: float = 0.0

    @property
    def openssh(self) -> str:
        return f"{self.key_type} {self.key}"


class Reachability(str, Enum):
    UNKNOWN = "unknown"
    BOOTING = "booting"  # called home, has not answered SSH yet (within the boot grace)
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Node:
    """A machine fleet can reach over SSH: declared in the profile or registered
    at call-home."""

    name: str
    site: str | None = None
    address: str | None = None  # private IPv4
    public_ipv4: str | None = None
    ipv6: str | None = None
    port: int = 22
    user: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = "profile"  # "profile" | "callhome"
    mac: str | None = None
    registered_at: float | None = None
    host_keys: tuple[HostKey, ...] = ()
    reachability: Reachability = Reachability.UNKNOWN
    last_seen: float | None = None
    last_error: str | None = None
    booting_since: float | None = None  # when it last began booting (its call-home...)




@dataclass(frozen=True)
class Distributor:
    """The boot services of one site's network, with the operator's on/off."""

    name: str  # the site's name
    site: str
    address: str
    interface: str | None
    enabled: bool
    artifacts: tuple[str, ...] = ()  # artifact ids



class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: JobState
    inputs: Mapping[str, Any]
    created_at: float
    progress: float = 0.0
    phase: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Artifact:
    id: str  # content address: sha256 of the build inputs
    kind: str  # ipxe | grub | syslinux | iso
    name: str
    path: str
    sha256: str
    size: int
    created_at: float
    version: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    """One state change. `id` is assigned by the store (0 until written)."""

    kind: str  # "machine.leased", "node.registered", "callhome.rejected", ...
    subject: str  # a MAC, node name, job id, distributor name
    message: str
    ts: float
    severity: Severity = Severity.INFO
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0
