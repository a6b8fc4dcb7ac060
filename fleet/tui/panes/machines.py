from __future__ import annotations

from typing import Hashable

from textual import work
from textual.binding import Binding

from fleet import records
from fleet.core.model import Machine
from fleet.errors import FleetError
from fleet.tui.panes.base import Pane, ago_text, clock_text
from fleet.tui.screens.confirm import ConfirmDialog
from fleet.tui.screens.lease import LeaseDialog
from fleet.tui.widgets.linetable import Column


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

    def row(self, m: Machine):
        lease = m.lease
        values = (m.mac, m.nic_vendor, m.arch.label, m.state.value, m.last_seen,
                  m.first_seen, m.distributor, lease.deployment if lease else None,
                  lease.hostname if lease else None)
        fields = {"state": m.state.value, "arch": m.arch.value,
                  "distributor": m.distributor or "", "vendor": m.nic_vendor or "",
                  "deployment": lease.deployment if lease else ""}
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
        ok, failed = [], []
        for mac in macs:
            try:
                await self.fleet.engine.release(mac, wipe=wipe)
                ok.append(mac)
            except FleetError as err:
                failed.append(f"{mac}: {err}")
        if ok:
            self.notify(f"released {len(ok)}{' (wipe)' if wipe else ''}: {', '.join(ok[:5])}")
            self.table.clear_marks()
        if failed:
            self.notify("\n".join(failed[:5]), severity="error", timeout=10)
