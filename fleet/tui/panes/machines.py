from __future__ import annotations

from typing import Hashable

from textual import work
from textual.binding import Binding

from fleet import records
from fleet.core.model import Machine
from fleet.errors import FleetError
from fleet.tui.panes.base import STALE_FLAG, Pane, ago_text, clock_text
from fleet.tui.screens.confirm import ConfirmDialog
from fleet.tui.screens.lease import LeaseDialog
from fleet.tui.widgets.linetable import Column


#: The demo's machines that misbehave on purpose (its `demo.started` event names
#: them): what each does and what to do about it.
QUIRK_FLAG = "!"
QUIRK_NOTES = {
    "slow-firmware": "Demo: slow firmware, on purpose. It takes only proxy offers that "
                     "arrive at least 50 ms after its DISCOVER, so it keeps retrying PXE "
                     "and is seen less often. Fix: set reply_delay_ms: 100 on the "
                     "distributor in the profile.",
    "stall": "Demo: its installer hangs half-way, on purpose; fleet's stall watchdog "
             "marks it stalled. Release it (r) to take it back.",
    "rekey": "Demo: a reinstall keeps its old SSH host key on disk, on purpose, so the "
             "key it calls home with is not the one its sshd shows: fleet refuses it "
             "as changed, as it should.",
    "unreachable": "Demo: its node stops answering a while after it comes up, on "
                   "purpose: fleet marks it unreachable.",
}
QUIRKS_OFF = "Turn the demo's misbehaviour off with demo: {misbehave: false} in the profile."


def quirk_note(quirk: str) -> str:
    return (QUIRK_NOTES.get(quirk, f"Demo: misbehaves on purpose ({quirk}).")
            + " " + QUIRKS_OFF)


class MachinesPane(Pane):
    """Machines seen PXE booting, like `pldrctl get unleased` plus their lease.
    Verbs: lease and release the selected (or marked) machines."""

    kind = "machines"
    title = "Machines"
    number = 1
    BINDINGS = [
        Binding("l", "lease", "Lease", id="verb.lease"),
        Binding("r", "release", "Release", id="verb.release"),
    ]
    WRITES = {"lease": "lease machines", "release": "release machines"}
    ROW_VERBS = Pane.ROW_VERBS | {"lease", "release"}
    COLUMNS = [
        Column("mac", "MAC address", 18),
        Column("vendor", "Vendor", 16),
        Column("arch", "Arch", 10),
        Column("state", "State", 12, styled=True),
        Column("last_seen", "Since", 7, fmt=ago_text, dynamic=True),
        Column("first_seen", "First seen", 14, fmt=clock_text),
        Column("distributor", "Dist", 8),
        Column("deployment", "Deployment", 11),
        Column("hostname", "Hostname", 14),
    ]
    SORT = "mac"
    COUNTED = ("state", "distributor")  # the header's totals, the distributors' "seen"

    def __init__(self, *args, sites: bool = False, local_site: str | None = None, **kw):
        """`sites`: the profile has several sites (or a remote one): the distributor
        column becomes a Site column (a site's boot services are named after it),
        and a machine not seen by boot services yet counts at `local_site`."""
        self.sites = sites
        self.local_site = local_site
        if sites:  # next to the MAC, where a narrow terminal still shows it
            rest = [c for c in self.COLUMNS[1:] if c.key != "distributor"]
            self.COLUMNS = [self.COLUMNS[0], Column("site", "Site", 8), *rest]
        super().__init__(*args, **kw)
        #: mac -> quirk, for the demo's machines that misbehave on purpose
        self.quirks: dict[str, str] = {}
        self.table.row_flag = self._flag
        self.table.row_style = lambda row: "stale" if self.is_stale(row) else None

    def _flag(self, row) -> str | None:
        if self.is_stale(row):
            return STALE_FLAG
        return QUIRK_FLAG if row.key in self.quirks else None

    def set_quirks(self, quirks: dict[str, str]) -> None:
        if quirks != self.quirks:
            self.quirks = dict(quirks)
            self.table.refresh()
            self.update_title()

    def update_title(self) -> None:
        super().update_title()
        if getattr(self, "quirks", None):
            title = f"{self.border_title}  {QUIRK_FLAG} misbehaves on purpose (demo)"
            if title != self.border_title:
                self.border_title = title

    def record_note(self, key: Hashable) -> str | None:
        quirk = self.quirks.get(str(key))
        return quirk_note(quirk) if quirk else None

    def row(self, m: Machine):
        lease = m.lease
        site = m.distributor or (self.local_site if self.sites else None)
        values = (m.mac, m.nic_vendor, m.arch.label, m.state.value, m.last_seen,
                  m.first_seen, site, lease.deployment if lease else None,
                  lease.hostname if lease else None)
        if self.sites:
            values = (m.mac, site, *values[1:6], *values[7:])
        fields = {"state": m.state.value, "arch": m.arch.value,
                  "distributor": m.distributor or "", "vendor": m.nic_vendor or "",
                  "deployment": lease.deployment if lease else ""}
        if self.sites:
            fields["site"] = site or ""
        return m.mac, values, fields

    async def record(self, key: Hashable) -> tuple[str, dict]:
        machine = await self.fleet.engine.machine(str(key))
        return f"machine {key}", records.machine(machine, self.clock())

    # -- verbs ---------------------------------------------------------------------------

    def action_lease(self) -> None:
        macs = self.targets()
        if not macs:
            return

        def done(result) -> None:
            if result:
                # at once: a remote site's rows follow its replica a moment later
                self.update(result)
                self.notify(f"leased {len(result)}: " + ", ".join(
                    f"{m.mac} -> {m.lease.deployment}" for m in result[:5]))
                self.table.clear_marks()

        self.app.push_screen(LeaseDialog(self.fleet.engine, macs), done)

    def action_release(self) -> None:
        macs = self.targets()
        if not macs:
            return

        def confirmed(answer) -> None:
            if answer is not None:
                self._release(macs, bool(answer.get("wipe")))

        n = len(macs)
        self.app.push_screen(ConfirmDialog(
            f"Release {n} machine{'s' if n > 1 else ''}? Their leases end.", macs,
            action="Release", wipe_option=True), confirmed)

    @work(group="verb", exit_on_error=False)
    async def _release(self, macs: list[str], wipe: bool) -> None:
        outcomes, failed = [], []
        for mac in macs:
            try:
                outcomes.append(await self.fleet.engine.release_outcome(mac, wipe=wipe))
            except FleetError as err:
                failed.append(f"{mac}: {err}")
        if outcomes:
            self.notify(release_summary(outcomes, wipe))
            self.table.clear_marks()
        if failed:
            self.notify("\n".join(failed[:5]), severity="error", timeout=10)


def release_summary(outcomes: list, wipe: bool) -> str:
    """One notice for a release: the engine's own line for one machine; for
    several, what changed, how many nodes retired, and which held no lease."""
    if len(outcomes) == 1:
        return outcomes[0].message
    done = [o for o in outcomes if o.changed]
    idle = [o.machine.mac for o in outcomes if not o.changed]
    parts = []
    if done:
        retired = sum(1 for o in done if o.retired)
        parts.append(f"released {len(done)}{' (wipe)' if wipe else ''}: "
                     + ", ".join(o.machine.mac for o in done[:5])
                     + (f"; {retired} node{'s' if retired != 1 else ''} retired"
                        if retired else ""))
    if idle:
        parts.append("not leased: " + ", ".join(idle[:5]))
    return "\n".join(parts)
