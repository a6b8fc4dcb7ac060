from __future__ import annotations

from typing import Any

from fleet.core.model import Node
from fleet.tui.panes.base import Pane, ago_text
from fleet.tui.widgets.linetable import Column


class NodesPane(Pane):
    """Declared and registered nodes, with the route the access plane would take."""

    kind = "nodes"
    title = "Nodes"
    number = 2
    COLUMNS = [
        Column("name", "Name", 14),
        Column("site", "Site", 8),
        Column("addresses", "Addresses", 28),
        Column("route", "Route / via", 18, dynamic=True),
        Column("reach", "Reachable", 11, styled=True),
        Column("last_seen", "Seen", 6, fmt=ago_text, dynamic=True),
        Column("labels", "Labels", 20),
    ]
    SORT = "name"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        #: node -> route, asked of the access plane only for rows on screen
        self.route_of = None  # set by the app when engine.access exists
        self._routes: dict[tuple, str | None] = {}
        self.table.columns[3] = Column("route", "Route / via", 18, dynamic=True,
                                       fmt=self._route_cell)

    def _route_cell(self, node: Node, _now: float) -> str:
        if self.route_of is None:
            return "-"
        key = (node.name, node.site, node.address, node.public_ipv4, node.ipv6, node.port)
        if key not in self._routes:
            if len(self._routes) > 50_000:
                self._routes.clear()
            try:
                self._routes[key] = route_text(self.route_of(node))
            except Exception:  # a route that cannot be planned shows as "-"
                self._routes[key] = None
        return self._routes[key] or "-"

    def row(self, node: Node):
        addresses = " ".join(a for a in (node.address, node.public_ipv4, node.ipv6) if a)
        labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        values = (node.name, node.site, addresses, node,
                  node.reachability.value, node.last_seen, labels)
        fields = {"site": node.site or "", "source": node.source,
                  "reachable": node.reachability.value, **dict(node.labels)}
        return node.name, values, fields


def route_text(route: Any) -> str | None:
    """`direct-public-ipv4`, `via gw1>inner`, `unreachable` (None: no access plane)."""
    if route is None:
        return None
    kind = getattr(getattr(route, "kind", None), "value", None) or str(route)
    chain = getattr(route, "chain", ())
    if chain:
        return "via " + ">".join(chain)
    return kind.replace("direct-", "")
