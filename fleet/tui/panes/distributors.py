from __future__ import annotations

from fleet.core.model import Distributor
from fleet.tui.panes.base import Pane
from fleet.tui.widgets.linetable import Column


class DistributorsPane(Pane):
    """Each site's boot services, switched on or off."""

    kind = "distributors"
    title = "Distributors"
    number = 4
    COLUMNS = [
        Column("site", "Site", 10),
        Column("interface", "Iface", 7),
        Column("address", "Address", 15),
        Column("on", "On", 4, styled=True),
        Column("artifacts", "Artifacts", 9),
        Column("seen", "Machines", 8),
    ]
    SORT = "site"

    def row(self, item: tuple[Distributor, int]):
        d, seen = item
        values = (d.site, d.interface, d.address, "on" if d.enabled else "off",
                  len(d.artifacts), seen)
        return d.name, values, {"on": "on" if d.enabled else "off"}
