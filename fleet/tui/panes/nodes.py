from __future__ import annotations

import inspect
from typing import Any, Hashable

from textual.binding import Binding

from fleet import records
from fleet.core.model import Node
from fleet.errors import FleetError
from fleet.tui.panes.base import STALE_FLAG, Pane, ago_text
from fleet.tui.screens.exec import ExecDialog
from fleet.tui.widgets.linetable import Column


class NodesPane(Pane):
    """Declared and registered nodes, with the route the access plane would take.
    Verbs: a shell on the selected node, broadcast to the marked ones (a shell tab
    each, see fleet/tui/shells.py), exec a command on them, port forwards."""

    kind = "nodes"
    title = "Nodes"
    number = 2
    BINDINGS = [
        Binding("s", "shell", "Shell", id="verb.shell"),
        Binding("B", "broadcast", "Broadcast", show=False, id="verb.broadcast"),
        Binding("x", "exec", "Exec", id="verb.exec"),
        Binding("f", "forward", "Forward", show=False, id="verb.forward"),
    ]
    WRITES = {"shell": "open shells", "broadcast": "broadcast to node shells",
              "exec": "run commands on nodes"}
    ROW_VERBS = Pane.ROW_VERBS | {"shell", "exec", "forward"}
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
        self.table.row_style = lambda row: "stale" if self.is_stale(row) else None
        self.table.row_flag = lambda row: STALE_FLAG if self.is_stale(row) else None

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

    async def record(self, key: Hashable) -> tuple[str, dict]:
        return f"node {key}", records.node(await self.fleet.engine.node(str(key)))

    # -- verbs ---------------------------------------------------------------------------

    def _access_has(self, method: str, what: str) -> bool:
        access = self.fleet.access
        if access is None or not hasattr(access, method):
            self.notify(f"{what} arrive with the access plane", severity="warning")
            return False
        return True

    async def action_shell(self) -> None:
        if not self._access_has("shell", "shells"):
            return
        names = self.targets()
        if not names:
            return
        node = names[0]
        try:
            opened = self.fleet.shell_runner(node)
            if inspect.isawaitable(opened):
                await opened
        except FleetError as err:
            self.notify(f"shell {node}: {err}", severity="error")

    async def action_broadcast(self) -> None:
        """Start broadcasting to the marked nodes' shells, or stop (as f11 does)."""
        shells = self.fleet.shells
        if shells.broadcast is not None:
            self.fleet.action_stop_broadcast()
            return
        if not self._access_has("shell", "shells"):
            return
        names = self.targets()
        if not names:
            self.notify("no nodes selected", severity="warning")
            return
        tabs = await shells.start_broadcast(names)
        self.notify(f"broadcasting to {len(tabs)} shell{'s' if len(tabs) > 1 else ''}: "
                    + ", ".join(t.node for t in tabs) + " (f11 or B on the nodes pane stops)")

    def action_exec(self) -> None:
        if not self._access_has("exec", "exec"):
            return
        names = self.targets()
        if names:
            self.app.push_screen(ExecDialog(self.fleet.engine, names))

    def action_forward(self) -> None:
        if not self._access_has("forward", "port forwards"):
            return
        self.notify("port forwards from the console arrive with the node tabs",
                    severity="warning")


def route_text(route: Any) -> str | None:
    """`direct-public-ipv4`, `via gw1>inner`, `unreachable` (None: no access plane)."""
    if route is None:
        return None
    kind = getattr(getattr(route, "kind", None), "value", None) or str(route)
    chain = getattr(route, "chain", ())
    if chain:
        return "via " + ">".join(chain)
    return kind.replace("direct-", "")
