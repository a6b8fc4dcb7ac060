"""The wipe: which wiper a machine boots, its one-time token, and its report.

`release --wipe` puts a machine in `wiping`. Its next boot (`/boot/<mac>.ipxe`)
gets `scripts.wiper_script`: the kernel and initrd of the newest wiper artifact
(`fleet --headless build wiper`, fleet.build.wiper) assigned to the distributor,
else the newest one fleet has, with the report URL and a wipe token on the
kernel command line. The wiper zeroes the disks' first and last MiB and POSTs

    POST /api/wiped   {"token": "...", "disks": [{"name": "vda", "bytes": 67108864}],
                       "failed": [{"name": "sdb", "error": "read-only"}], "uptime": "7.31"}

`report_wiped` checks it: a wrong, malformed or reused token (the machine is
no longer wiping) is refused (403) with a `wipe.rejected` event and changes
nothing; a good one is the lifecycle's WipeDone ("wiped in 14s (vda 64 MiB)",
back to `discovered`: the next boot is the hold loop), or, when a disk could
not be cleared, Fail with the disks named (the operator decides).

Without a wiper artifact the machine keeps polling with `wiper_missing_script`;
fleet starts building one (kind `wiper`, from the kernel and busybox-static
installed where fleet runs) and records a `wipe.no_image` warning saying so, or
why it cannot: nothing is ever reported as wiped that was not.

Tokens (fleet.tokens, purpose "wipe") are numbered with the second the machine
entered `wiping`: valid only while it still is, so each release issues a new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.boot.callhome import InvalidRequest, Rejected, record_rejection
from fleet.core import lifecycle as lc
from fleet.core.model import Artifact, Machine, MachineState, Severity
from fleet.errors import BadInput, FleetError
from fleet.tokens import WIPE, TokenSigner

if TYPE_CHECKING:
    from fleet.engine import Engine

S = MachineState

KIND = "wiper"
FILES = ("vmlinuz", "initrd.gz")
ID_PREFIX = 16  # hex digits of the artifact id in the wiper's URLs
TOKEN_RE = re.compile(r"[a-z0-9.]{1,100}")
DISK_RE = re.compile(r"[a-z][a-z0-9]{0,31}")
MAX_DISKS = 256
REPORT_FIELDS = {"token", "disks", "failed", "uptime"}


class WipeRefused(Exception):
    """A wipe report fleet refuses; `status` is the HTTP answer (400 or 403)."""

    def __init__(self, reason: str, status: int = 403):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Report:
    token: str
    disks: tuple[tuple[str, int], ...]  # (name, bytes)
    failed: tuple[tuple[str, str], ...]  # (name, error)


# -- tokens ----------------------------------------------------------------------------

def wipe_token(engine: "Engine", machine: Machine) -> str:
    if machine.state is not S.WIPING:
        raise ValueError(f"{machine.mac} is not wiping")
    return engine.tokens.issue(int(machine.state_since), machine.mac, WIPE)


async def machine_for_token(engine: "Engine", token: str) -> Machine:
    """The wiping machine `token` was issued to, or WipeRefused (403)."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise WipeRefused("malformed token")
    number = TokenSigner.lease_id_of(token)
    if number is None:
        raise WipeRefused("malformed token")
    for machine in await engine.store.machines.list(S.WIPING):
        if int(machine.state_since) != number:
            continue
        if engine.tokens.verify(token, number, machine.mac, WIPE):
            return machine
    raise WipeRefused("no machine is wiping with this token (wrong, or already used)")


# -- the report ------------------------------------------------------------------------

def parse_report(payload: Any) -> Report:
    """Check a wiper's report strictly; WipeRefused(status=400) says what is wrong."""
    def bad(reason: str) -> WipeRefused:
        return WipeRefused(reason, 400)

    if not isinstance(payload, dict):
        raise bad("the body must be a JSON object")
    extra = set(payload) - REPORT_FIELDS
    if extra:
        raise bad(f"unknown fields: {', '.join(sorted(str(k)[:40] for k in extra))}")
    token = payload.get("token")
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise bad("token must be a string of [a-z0-9.]")
    disks, failed = payload.get("disks", []), payload.get("failed", [])
    if not isinstance(disks, list) or not isinstance(failed, list):
        raise bad("disks and failed must be lists")
    if len(disks) + len(failed) > MAX_DISKS:
        raise bad(f"at most {MAX_DISKS} disks")
    out_disks = []
    for d in disks:
        if not (isinstance(d, dict) and set(d) == {"name", "bytes"}
                and isinstance(d["name"], str) and DISK_RE.fullmatch(d["name"])
                and isinstance(d["bytes"], int) and not isinstance(d["bytes"], bool)
                and 0 <= d["bytes"] < 1 << 63):
            raise bad('disks: each {"name": "<kernel disk name>", "bytes": <size>}')
        out_disks.append((d["name"], d["bytes"]))
    out_failed = []
    for f in failed:
        if not (isinstance(f, dict) and set(f) == {"name", "error"}
                and isinstance(f["name"], str) and DISK_RE.fullmatch(f["name"])
                and isinstance(f["error"], str) and re.fullmatch(r"[a-z -]{1,40}", f["error"])):
            raise bad('failed: each {"name": "<kernel disk name>", "error": "<words>"}')
        out_failed.append((f["name"], f["error"]))
    return Report(token, tuple(out_disks), tuple(out_failed))


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else \
                f"{value:.1f} {unit}"
    return f"{n} bytes"


def describe(report: Report) -> str:
    disks = ", ".join(f"{name} {_size(size)}" for name, size in report.disks)
    return disks or "no disks found"


async def report_wiped(engine: "Engine", payload: Any, peer: str, *, limiter=None) -> Machine:
    """Apply a wiper's report; WipeRefused (after a `wipe.invalid`/`wipe.rejected`
    event, rate-limited per peer by `limiter`) if refused."""
    try:
        report = parse_report(payload)
        machine = await machine_for_token(engine, report.token)
    except WipeRefused as err:
        cls = InvalidRequest if err.status == 400 else Rejected
        kind = "wipe.invalid" if err.status == 400 else "wipe.rejected"
        await record_rejection(engine, kind, cls(err.reason), peer, what="wipe report",
                               limiter=limiter)
        raise
    disks = [{"name": n, "bytes": b} for n, b in report.disks]
    if report.failed:
        names = ", ".join(f"{n} ({e})" for n, e in report.failed)
        op: lc.Operation = lc.Fail(f"wipe failed on {names}; cleared: {describe(report)}")
    else:
        op = lc.WipeDone(detail=describe(report), disks=tuple(n for n, _ in report.disks))
    try:
        transition = await engine.advance(machine.mac, op)
    except BadInput as err:  # it changed state since we looked
        await record_rejection(engine, "wipe.rejected", Rejected(str(err)), peer,
                               machine.mac, what="wipe report", limiter=limiter)
        raise WipeRefused(str(err)) from None
    if disks and not report.failed:
        # the wiper's own account, beside the lifecycle's "wiped in" event
        await engine.record(engine.event(
            "wipe.reported", machine.mac, f"{machine.mac}: wiper cleared {describe(report)}",
            disks=disks, peer=peer))
    return transition.machine


# -- the wiper image -------------------------------------------------------------------

def _usable(a: Artifact) -> bool:
    return a.kind == KIND and all((Path(a.path) / name).is_file() for name in FILES)


async def current_wiper(engine: "Engine", site: str) -> Artifact | None:
    """The wiper a machine of `site` boots: the newest one assigned to the site's
    distributor, else the newest fleet has; None when there is none."""
    wipers = [a for a in await engine.store.artifacts.list() if _usable(a)]
    if not wipers:
        return None
    assigned = set(await engine.store.distributors.artifacts(site))
    mine = [a for a in wipers if a.id in assigned]
    return max(mine or wipers, key=lambda a: a.created_at)


async def wiper_file(engine: "Engine", id_prefix: str, name: str) -> Path | None:
    """The file `name` of the wiper artifact whose id starts with `id_prefix`."""
    if name not in FILES or not re.fullmatch(r"[0-9a-f]{%d}" % ID_PREFIX, id_prefix):
        return None
    for a in await engine.store.artifacts.list():
        if a.id.startswith(id_prefix) and _usable(a):
            return Path(a.path) / name
    return None


async def record_no_image(engine: "Engine", machine: Machine, site: str) -> None:
    """Once per release (the machine polls every few seconds): start building a
    wiper, so its next poll can boot one, and record a `wipe.no_image` warning
    saying how that went."""
    for e in await engine.events(50, subject=machine.mac):
        if e.kind == "wipe.no_image" and e.ts >= machine.state_since:
            return
    how = await _start_build(engine, site)
    await engine.record(engine.event(
        "wipe.no_image", machine.mac,
        f"{machine.mac} is waiting to be wiped, but there is no wiper image: {how}",
        severity=Severity.WARNING, site=site))


async def _start_build(engine: "Engine", site: str) -> str:
    """Build a wiper from this machine's kernel and busybox-static, in the background."""
    try:
        outcome = await engine.builds.build(KIND, wait=False, distributor=site)
    except FleetError as err:
        return (f"none can be built here ({err}); build one with `fleet --headless build "
                f"wiper --wiper-root DIR --distributor {site}`")
    if outcome.artifact is not None:
        return f"found {outcome.artifact.name} in the artifact cache"
    return f"building one now (job {outcome.job_id})"
