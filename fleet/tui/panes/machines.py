from __future__ import annotations

from fleet.core.model import Machine
from fleet.tui.panes.base import Pane, ago_text, clock_text
from fleet.tui.widgets.linetable import Column


class MachinesPane(Pane):
    """Machines seen PXE booting, like `pldrctl get unleased` plus their lease."""

    kind = "machines"
    title = "Machines"
    number = 1
    COLUMNS = [
        Column("mac", "MAC address", 18),
        Column("vendor", "Vendor", 16),
        Column("arch", "Arch", 10),
        Column("state", "State", 12, styled=True),
        Column("first_seen", "First seen", 14, fmt=clock_text),
        Column("last_seen", "Since", 7, fmt=ago_text, dynamic=True),
        Column("distributor", "Dist", 8),
        Column("deployment", "Deployment", 11),
        Column("hostname", "Hostname", 14),
    ]
    SORT = "mac"
    COUNTED = ("state", "distributor")  # the header's totals, the distributors' "seen"

    def row(self, m: Machine):
        lease = m.lease
        values = (m.mac, m.nic_vendor, m.arch.label, m.state.value, m.first_seen,
                  m.last_seen, m.distributor, lease.deployment if lease else None,
                  lease.hostname if lease else None)
        fields = {"state": m.state.value, "arch": m.arch.value,
                  "distributor": m.distributor or "", "vendor": m.nic_vendor or "",
                  "deployment": lease.deployment if lease else ""}
        return m.mac, values, fields
