"""The console: live panes over the engine's change feed.

Widgets never touch the store or the network: the app opens the engine, reads
snapshots from it, and refreshes when the feed says something changed.
"""

from __future__ import annotations

import time

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from fleet.core.durations import format_duration
from fleet.engine import Engine
from fleet.errors import FleetError
from fleet.profile import Profile


class Pane(Vertical):
    """A titled box holding one live list."""

    DEFAULT_CSS = """
    Pane { border: round $primary 50%; height: 1fr; }
    Pane:focus-within { border: round $accent; }
    """

    def __init__(self, title: str, child, **kw):
        super().__init__(child, **kw)
        self.border_title = title


class FleetApp(App):
    TITLE = "fleet"
    CSS = """
    #status { height: 1; padding: 0 1; background: $panel; }
    #top { height: 1fr; }
    #bottom { height: 1fr; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("r", "refresh", "Refresh", id="refresh"),
    ]

    def __init__(self, profile: Profile, *, read_only: bool = False,
                 theme_name: str | None = None, engine: Engine | None = None):
        super().__init__()
        self.profile = profile
        self.read_only = read_only
        self.engine = engine
        self._own_engine = engine is None
        self._theme_name = theme_name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="status")
        with Horizontal(id="top"):
            yield Pane("Unleased MACs", DataTable(id="machines", cursor_type="row"))
            yield Pane("Nodes", DataTable(id="nodes", cursor_type="row"))
        with Horizontal(id="bottom"):
            yield Pane("Events", RichLog(id="events", wrap=False, markup=False))
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = f"profile {self.profile.name}" + (" · read-only" if self.read_only else "")
        machines = self.query_one("#machines", DataTable)
        machines.add_columns("MAC address", "Hardware vendor", "Arch", "State", "Time since")
        nodes = self.query_one("#nodes", DataTable)
        nodes.add_columns("Name", "Site", "Address", "Reachable", "Labels")
        try:
            if self.engine is None:
                self.engine = await Engine.open(self.profile, read_only=self.read_only)
        except FleetError as err:
            self.exit(return_code=err.exit_code, message=f"fleet: {err}")
            return
        for event in await self.engine.events(200):
            self._log_event(event)
        self._sub = self.engine.follow()
        self.run_worker(self._follow(), exclusive=True, group="feed")
        await self.action_refresh()
        self.set_interval(2.0, self.action_refresh)

    async def _follow(self) -> None:
        async for event in self._sub:
            self._log_event(event)
            await self.action_refresh()

    def _log_event(self, event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        self.query_one("#events", RichLog).write(f"{stamp} {event.kind:<22} {event.message}")

    async def action_refresh(self) -> None:
        if self.engine is None:
            return
        now = time.time()
        machines = await self.engine.machines()
        nodes = await self.engine.nodes()
        table = self.query_one("#machines", DataTable)
        with self.batch_update():
            table.clear()
            for m in machines:
                table.add_row(m.mac, m.nic_vendor or "-", m.arch.label, m.state.value,
                              format_duration(now - m.last_seen), key=m.mac)
            ntable = self.query_one("#nodes", DataTable)
            ntable.clear()
            for n in nodes:
                labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
                ntable.add_row(n.name, n.site or "-", n.address or n.public_ipv4 or "-",
                               n.reachability.value, labels or "-", key=n.name)
        unleased = sum(1 for m in machines if m.state.value == "discovered")
        self.query_one("#status", Static).update(
            f"profile {self.profile.name}{'  [read-only]' if self.read_only else ''}  ·  "
            f"{len(machines)} machines ({unleased} unleased)  ·  {len(nodes)} nodes  ·  "
            f"updated {time.strftime('%H:%M:%S')}")

    async def on_unmount(self) -> None:
        if self.engine is not None and self._own_engine:
            await self.engine.close()
