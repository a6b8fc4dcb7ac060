"""The console: live panes over the engine's change feed.

Widgets never touch the store or the network: the app calls the engine, renders
what it returns, and refreshes when the change feed says something changed.

Refresh discipline: one subscription to `engine.follow()`; events are collected
and flushed at most every REFRESH_INTERVAL (bursts coalesce); a flush fetches only
the subjects that changed (a full reload past BULK_LIMIT of them). A refresh never
overlaps another: what arrives meanwhile waits for the next flush. A 2 s tick
repaints "time since" columns; a slow tick reconciles everything (sightings touch
`last_seen` without events).

The dashboard is the first tab of a TabbedContent (`#tabs`): node shells and
broadcast are more TabPanes (`add_tab`; see fleet/tui/shells.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from functools import partial
from typing import Any, Awaitable, Callable, Hashable, Sequence

from textual import events, on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane, Tabs
from textual.widgets.input import Selection

from fleet.core.model import Event
from fleet.engine import Engine
from fleet.errors import FleetError
from fleet.paths import Paths
from fleet.profile import Profile
from fleet.tui.commands import FleetCommands
from fleet.tui.config import ConsoleConfig, load_config
from fleet.tui.keymap import ALIASES, APP_BINDINGS, command_words, unavailable_bindings
from fleet.tui.panes import (DistributorsPane, EventsPane, JobsPane, MachinesPane, NodesPane,
                             Pane, SitesPane)
from fleet.tui.keyhelp import help_sections
from fleet.tui.screens.help import HelpScreen
from fleet.tui.shells import SHELL_ACTIONS, ShellActions
from fleet.tui.themes import DEFAULT_THEME, STATE_VARIABLES, bundled_dir, load_themes

log = logging.getLogger("fleet.console")

DEMO_STARTED = "demo.started"
#: something started with the engine: returns an object to `await x.close()` at
#: quit, or None when it did not start (fleet.cli gives the control socket's server)
Service = Callable[[Engine], Awaitable[Any]]
REFRESH_INTERVAL = 0.25
TICK_INTERVAL = 2.0
RECONCILE_INTERVAL = 30.0
BULK_LIMIT = 300
FIRST_PAGE = 200  # rows of each big pane fetched for the first screen
NARROW_BELOW = 120  # columns: below this the dashboard shows only machines, nodes, events
#: the console looks at its replica's sites table when its held channels wrote to
#: it, and at least this often (another process's writes wake nothing)
SITES_POLL_INTERVAL = 0.25
PANES = (MachinesPane, NodesPane, JobsPane, DistributorsPane, EventsPane, SitesPane)
#: the dashboard's keys (not for shell tabs, dialogs or the command line)
DASHBOARD_ACTIONS = {"unavailable", "focus_pane", "toggle_maximize", "command_mode",
                     "filter_mode", "help", "reload"}


class FleetApp(ShellActions, App):
    TITLE = "fleet"
    ESCAPE_TO_MINIMIZE = False  # escape goes to action_back (closes, clears, then un-zooms)
    CSS = """
    #header { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    #header.read-only { background: $warning 30%; }
    #tabs { height: 1fr; }
    #tabs > ContentSwitcher { height: 1fr; }
    #tab-dashboard { padding: 0; }
    #row1 { height: 2fr; }
    #row2 { height: 2fr; }
    #row3 { height: 1fr; }
    /* the sites pane is on the dashboard when some site is remote (6 zooms to it) */
    #pane-sites { width: 62; display: none; }
    #pane-sites.-on-dashboard, #pane-sites.-maximized { display: block; }
    Screen.-narrow #row3 > #pane-sites { display: none; }
    #row3 > #pane-sites.-maximized, Screen.-narrow #row3 > #pane-sites.-maximized {
        display: block; width: 1fr; }
    #pane-distributors { width: 62; }
    #pane-jobs { width: 62; }
    /* a small terminal: machines and nodes take the width; distributors and jobs
       leave the dashboard (the header counts them; 3 and 4 zoom to them) */
    Screen.-narrow #row1 > #pane-distributors, Screen.-narrow #row2 > #pane-jobs {
        display: none; }
    Screen.-narrow #row1 > #pane-distributors.-maximized,
    Screen.-narrow #row2 > #pane-jobs.-maximized { display: block; }
    #row1 > #pane-distributors.-maximized, #row2 > #pane-jobs.-maximized { width: 1fr; }
    #cmdline { display: none; border: none; height: 1; padding: 0 1; background: $panel; }
    #cmdline.open { display: block; }
    """
    BINDINGS = APP_BINDINGS + unavailable_bindings(PANES)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]
    COMMANDS = App.COMMANDS | {FleetCommands}

    def __init__(self, profile: Profile, *, read_only: bool = False,
                 theme_name: str | None = None, engine: Engine | None = None,
                 config: ConsoleConfig | None = None, paths: Paths | None = None,
                 clock: Callable[[], float] | None = None, blink: bool = True,
                 services: Sequence[Service] = ()):
        super().__init__()
        #: started with the engine, closed before it (fleet.cli gives the control
        #: socket's server: the console does not import fleet.headless itself)
        self._services = list(services)
        self._running_services: list = []
        self.profile = profile
        self.read_only = read_only or bool(engine is not None and engine.read_only)
        self.engine = engine
        self._own_engine = engine is None
        self.paths = engine.paths if engine is not None else (paths or Paths.default())
        #: Text cursors blink (snapshot tests turn it off for stable pictures).
        self.blink = blink
        self.config = config if config is not None else load_config(self.paths.config_file)
        self._clock: Callable[[], float] = (engine.clock if engine is not None
                                            else clock or time.time)
        self._theme_request = theme_name or os.environ.get("FLEET_THEME") or self.config.theme
        self._startup_notes: list[tuple[str, str]] = []
        self._load_themes()
        self._sub = None
        self.demo = None  # the demo site, when the profile has one
        self._pending: list[Event] = []
        self._flush_timer = None
        self._refreshing = False
        self._full_reload = False
        self._cmd_mode = ":"
        self._last_flush = 0.0
        self.refresh_count = 0
        self._first: dict | None = None  # what on_load fetched for the first screen
        sites = profile.sites
        #: the sites reached through an agent: their rows come from the replica
        self.remote_sites = frozenset(s.name for s in sites if s.agent is not None)
        self._several_sites = len(sites) > 1 or bool(self.remote_sites)
        local = [s.name for s in sites if s.agent is None]
        self._local_site = local[0] if len(local) == 1 else None
        self._site_watch = None  # fleet.sites.changes.SiteWatch, with remote sites
        self._site_events: dict[str, list[Event]] = {}
        self.site_records: list[dict[str, Any]] = []  # fleet.sites.overview
        #: perf_counter() marks of the start-up (the bench prints them)
        self.timings: dict[str, float] = {"init": time.perf_counter()}
        #: `s`: node -> None or an awaitable; opens a shell tab (fleet/tui/shells.py)
        self.shell_runner: Callable[[str], Any] = self.open_shell_tab

    # -- themes and keymap -------------------------------------------------------

    def _load_themes(self) -> None:
        found = load_themes(bundled_dir(), self.paths.user_themes_dir)
        for theme in found.themes.values():
            self.register_theme(theme)
        wanted = self._theme_request or DEFAULT_THEME
        problems = list(found.errors)
        if wanted not in self.available_themes:
            problems.append(f"theme {wanted!r} not found")
            wanted = DEFAULT_THEME
        if problems:
            self._startup_notes.append(
                ("; ".join(problems) + f" — using {wanted}", "warning"))
        self._initial_theme = wanted

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(STATE_VARIABLES)

    def set_theme(self, name: str) -> bool:
        if name not in self.available_themes:
            self.notify(f"no theme {name!r}; try: {', '.join(sorted(self.available_themes))}",
                        severity="error")
            return False
        self.theme = name
        return True

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        clock = lambda: self._clock()  # noqa: E731 (the engine's clock once it is open)
        self._header = Static("", id="header")
        several, local = self._several_sites, self._local_site
        self._panes = {p.kind: p for p in (
            MachinesPane(clock, sites=several, local_site=local), DistributorsPane(clock),
            NodesPane(clock), JobsPane(clock),
            EventsPane(clock, sites=bool(self.remote_sites), local_site=local),
            SitesPane(clock))}
        self._panes["sites"].set_class(bool(self.remote_sites), "-on-dashboard")
        self._cmdline = Input(id="cmdline", select_on_focus=False, suggester=SuggestFromList(
            command_words(), case_sensitive=False))
        yield self._header
        with TabbedContent(id="tabs"):
            with TabPane("Dashboard", id="tab-dashboard"):
                with Vertical():
                    with Horizontal(id="row1"):
                        yield self._panes["machines"]
                        yield self._panes["distributors"]
                    with Horizontal(id="row2"):
                        yield self._panes["nodes"]
                        yield self._panes["jobs"]
                    with Horizontal(id="row3"):
                        yield self._panes["events"]
                        yield self._panes["sites"]
        yield self._cmdline
        yield Footer()

    def on_resize(self) -> None:
        # the header's wording follows the width (after the screen's breakpoint class)
        self.call_after_refresh(self._update_header)

    def pane(self, kind: str) -> Pane | None:
        return getattr(self, "_panes", {}).get(kind)

    def current_pane(self) -> Pane:
        node = self.focused
        while node is not None:
            if isinstance(node, Pane):
                return node
            node = node.parent
        maximized = self.screen.maximized
        if isinstance(maximized, Pane):
            return maximized
        return self.pane("machines")

    async def add_tab(self, title: str, widget: Widget, tab_id: str) -> None:
        """Later pieces (node shells, broadcast, recordings) add their tabs here."""
        tabs = self.screen_stack[0].query_one("#tabs", TabbedContent)
        await tabs.add_pane(TabPane(title, widget, id=tab_id))
        tabs.active = tab_id

    # -- start and stop ------------------------------------------------------------------

    async def on_load(self) -> None:
        """Before the terminal switches to the app: open the store and fetch what the
        first screen shows, so the first frame has rows and these awaits do not
        queue behind Textual's first layout and paint (0.2-0.4 s at start-up).
        The theme too: set after mount it re-parses every stylesheet (0.15 s)."""
        self.theme = self._initial_theme
        if self.engine is None:
            remote = None
            if self.remote_sites:  # (imported only then: a single-host start stays as fast)
                from fleet.sites.hub import SiteHub
                remote = SiteHub
            try:
                self.engine = await Engine.open(self.profile, read_only=self.read_only,
                                                paths=self.paths, clock=self._clock,
                                                remote=remote)
            except FleetError as err:  # the terminal is untouched: just the message
                self.exit(return_code=err.exit_code, message=f"fleet: {err}")
                return
            self._clock = self.engine.clock
        self.timings["engine"] = time.perf_counter()
        try:
            await self._hold_sites()
            self._first = await self._fetch_first_screen()
        except FleetError as err:
            self._startup_notes.append((f"cannot load: {err}", "error"))

    async def on_mount(self) -> None:
        self.timings["mount"] = time.perf_counter()
        if self.config.keymap:
            self.set_keymap(self.config.keymap)
        for message, severity in self._startup_notes + [
                (e, "warning") for e in self.config.errors]:
            self.notify(message, severity=severity, timeout=10)
        self.query_one(Tabs).can_focus = False
        self._cmdline.cursor_blink = self.blink
        self.pane("machines").table.focus()
        if self.engine is None:
            return  # on_load could not open it and is exiting
        self._show_first_screen()
        access = self.access
        if access is not None and hasattr(access, "route"):
            self.pane("nodes").route_of = access.route
        self._sub = self.engine.follow()
        self.run_worker(self._follow(), group="feed", exit_on_error=False)
        if self._services:
            self.run_worker(self._start_services(), group="services", exit_on_error=False)
        if self.engine.profile.demo is not None and not self.read_only:
            self.run_worker(self._start_demo(), group="demo", exit_on_error=False)
        self._refreshing = True
        # the whole lists after the first frame is on screen, not competing with it
        self.call_after_refresh(lambda: self.run_worker(
            self._initial_load, group="refresh", exit_on_error=False))
        self.set_interval(TICK_INTERVAL, self._tick)
        self.set_interval(RECONCILE_INTERVAL, self._reconcile)
        if self._site_watch is not None:
            self.run_worker(self._follow_sites, group="sites", exit_on_error=False)
        self._update_header()

    async def _hold_sites(self) -> None:
        """Keep a channel to every remote site (the replica follows them) and take
        the replica as it is now as the start of what the console shows."""
        hub = self.engine.remote
        if hub is None:
            return  # this process's own sites: read after the first frame (_initial_load)
        if self.engine.profile.demo is None or self.read_only:
            hub.hold()  # else once the demo is up: its jump's key and the operator key
        self._site_watch = await hub.watch()
        self._site_events = await self._site_watch.start()
        await self._read_sites()

    async def _read_sites(self) -> None:
        from fleet.sites.overview import overview

        self.site_records = await overview(self.engine)

    def _show_sites(self) -> None:
        """The sites pane, and the rows of away sites drawn stale with since when."""
        from fleet.sites.overview import away_line

        records = self.site_records
        self.pane("sites").load(records)
        away = [r for r in records if r["remote"] and not r["connected"]]
        note = "; ".join(away_line(r) for r in away)
        for kind in ("machines", "nodes"):
            self.pane(kind).set_stale(frozenset(r["site"] for r in away), note)

    async def _follow_sites(self) -> None:
        hub = self.engine.remote
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(hub.written(), SITES_POLL_INTERVAL)
            while self._refreshing:  # a refresh reads the replica too: after it
                await asyncio.sleep(0.02)
            self._refreshing = True
            try:
                await self._sites_changed()
            except Exception:  # noqa: BLE001 - the next look tries again; never stop following
                log.exception("console: reading the replica failed")
                await asyncio.sleep(1.0)

    async def _sites_changed(self) -> None:
        """What the replica changed since the last look: a remote site's new
        events, its machines and nodes when its snapshot moved, the sites pane."""
        hub = self.engine.remote
        try:
            changes = await self._site_watch.poll()
            for change in changes:
                if change.events:
                    self.pane("events").add(change.events, site=change.site)
                if change.rows:
                    self._replace_site_rows("machines", change.site,
                                            await hub.machines(change.site))
                    self._replace_site_rows("nodes", change.site,
                                            await hub.nodes(change.site))
            if changes:
                await self._read_sites()
                self._show_sites()
        except FleetError as err:
            self.notify(f"sites: {err}", severity="error")
        finally:
            self._refreshing = False
            if self._pending or self._full_reload:
                self._schedule()

    def _replace_site_rows(self, kind: str, site: str, records: list) -> None:
        """`site`'s rows of the pane are these now (a node of the same name
        elsewhere keeps its row, as in engine.nodes)."""
        pane = self.pane(kind)
        rows = pane.table.rows
        mine = []
        for record in records:
            key = pane.row(record)[0]
            if key not in rows or rows[key].fields.get("site") == site:
                mine.append(record)
        keep = {pane.row(r)[0] for r in mine}
        pane.update(mine)
        pane.remove([k for k, r in list(rows.items())
                     if r.fields.get("site") == site and k not in keep])

    async def _start_demo(self) -> None:
        """The demo profile's simulated site, with the boot services, in this process."""
        from fleet.sim.api import prepare_demo

        try:
            await self.engine.start_site(demo=prepare_demo)
            self.demo = self.engine.demo
        except FleetError as err:  # e.g. the ports are held by a running `serve`
            self.notify(f"demo: {err}", severity="error", timeout=15)
        finally:
            # the demo's remote site is reached through its jump, whose key and the
            # operator key the demo makes as it starts: held from now
            if self.engine.remote is not None and not self.engine.remote.holding:
                self.engine.remote.hold()

    async def _start_services(self) -> None:
        for start in self._services:
            try:
                running = await start(self.engine)
            except Exception as err:  # the console works without them
                self.notify(f"cannot start a service: {err}", severity="warning", timeout=10)
                continue
            if running is not None:
                self._running_services.append(running)

    async def on_unmount(self) -> None:
        for running in reversed(self._running_services):
            with contextlib.suppress(Exception):
                await running.close()
        self._running_services.clear()
        if self._sub is not None:
            self._sub.close()
        if self.engine is not None and self._own_engine:
            await self.engine.close()  # stops the demo and boot services too
        elif self.demo is not None:
            await self.engine.stop_site()

    # -- the change feed -------------------------------------------------------------------

    async def _follow(self) -> None:
        async for event in self._sub:
            self._pending.append(event)
            self._schedule()

    def _schedule(self, delay: float | None = None) -> None:
        if self._flush_timer is not None or self._refreshing:
            return  # a flush is due, or a refresh runs and reschedules when done
        if delay is None:
            delay = max(0.0, REFRESH_INTERVAL - (time.monotonic() - self._last_flush))
        self._flush_timer = self.set_timer(max(delay, 0.001), self._flush_feed)

    def _flush_feed(self) -> None:
        self._flush_timer = None
        if self._refreshing:
            return
        events, self._pending = self._pending, []
        full, self._full_reload = self._full_reload, False
        if not events and not full:
            return
        self._last_flush = time.monotonic()
        if events:
            self.pane("events").add(events)
            self._note_demo(events)
        macs, nodes, jobs, dists = set(), set(), False, False
        machine_rows = self.pane("machines").table.rows
        node_rows = self.pane("nodes").table.rows
        for e in events:
            head = e.kind.split(".", 1)[0]
            if head == "machine" or e.subject in machine_rows:
                macs.add(e.subject)
            if head == "node" or e.subject in node_rows:
                nodes.add(e.subject)
            if head in ("job", "build", "artifact"):
                jobs = True
            if head in ("distributor", "artifact"):
                dists = True
        if len(macs) > BULK_LIMIT or len(nodes) > BULK_LIMIT:
            full = True
        self._refreshing = True
        # a partial, not a coroutine: if the app exits before the worker starts,
        # no coroutine is left un-awaited
        self.run_worker(partial(self._refresh, full, macs, nodes, jobs, dists),
                        group="refresh", exit_on_error=False)

    def _refresh_done(self) -> None:
        self._refreshing = False
        self.refresh_count += 1
        self._update_header()
        if self._pending or self._full_reload:
            self._schedule()

    def _reconcile(self) -> None:
        self._full_reload = True
        self._schedule()

    async def _initial_load(self) -> None:
        try:
            await self._refresh_body(True, set(), set(), True, True)
            await self._find_demo_start()
            if self._site_watch is None:
                await self._read_sites()
                self._show_sites()
        except FleetError as err:
            self.notify(f"cannot load: {err}", severity="error")
        finally:
            self._refresh_done()

    async def _fetch_first_screen(self) -> dict:
        """The recent events, the first rows of the big panes and their totals (a few
        LIMIT queries: 10,000 rows take a second), the jobs and distributors."""
        engine = self.engine
        machines, n_machines, nodes, n_nodes = await engine.first_page(FIRST_PAGE)
        return {"events": await engine.events(500), "machines": (machines, n_machines),
                "nodes": (nodes, n_nodes), "jobs": await engine.recent_jobs(500),
                "distributors": await engine.distributors()}

    def _show_first_screen(self) -> None:
        """Paint what on_load fetched; the whole lists follow (`_initial_load`)."""
        first, self._first = getattr(self, "_first", None), None
        if first is None:
            return
        self.pane("events").load(first["events"])
        for site, site_events in self._site_events.items():
            self.pane("events").add(site_events, site=site)
        self._note_demo(first["events"])
        if self._site_watch is not None:
            self._show_sites()
        for name in ("machines", "nodes"):
            rows, total = first[name]
            self.pane(name).load(rows, expected=total if total > len(rows) else None)
        self.pane("jobs").load(first["jobs"])
        self._load_distributors(first["distributors"])
        self._update_header()
        self.timings.setdefault("first_screen", time.perf_counter())
        self.call_after_refresh(lambda: self.timings.setdefault("first_paint",
                                                                time.perf_counter()))

    async def _refresh(self, full: bool, macs: set, nodes: set, jobs: bool,
                       dists: bool) -> None:
        try:
            await self._refresh_body(full, macs, nodes, jobs, dists)
        except FleetError as err:
            self.notify(f"refresh failed: {err}", severity="error")
        finally:
            self._refresh_done()

    async def _refresh_body(self, full: bool, macs: set, nodes: set, jobs: bool,
                            dists: bool) -> None:
        engine = self.engine
        machines_pane = self.pane("machines")
        nodes_pane = self.pane("nodes")
        if full:
            machines = await engine.machines()
            self.timings.setdefault("machines_fetched", time.perf_counter())
            machines_pane.load(machines)
            self.timings.setdefault("machines_shown", time.perf_counter())
            nodes = await engine.nodes()
            self.timings.setdefault("nodes_fetched", time.perf_counter())
            nodes_pane.load(nodes)
            self.timings.setdefault("nodes_shown", time.perf_counter())
            jobs = dists = True
        else:
            if macs:
                found, gone = [], []
                for mac in macs:
                    machine = await engine.find_machine(mac)
                    (found.append(machine) if machine else gone.append(mac))
                machines_pane.update(found)
                machines_pane.remove(g for g in gone if g in machines_pane.table.rows)
                dists = dists or bool(found)
            if nodes:
                found, gone = [], []
                for name in nodes:
                    node = await engine.find_node(name)
                    (found.append(node) if node else gone.append(name))
                nodes_pane.update(found)
                nodes_pane.remove(g for g in gone if g in nodes_pane.table.rows)
        if jobs:
            self.pane("jobs").load(await engine.recent_jobs(500))
        if dists:
            self._load_distributors(await engine.distributors())

    def _note_demo(self, events) -> None:
        """The demo's newest `demo.started` event names the machines that misbehave
        on purpose: the machines pane flags them and explains them in details."""
        started = [e for e in events if e.kind == DEMO_STARTED]
        if started:
            newest = max(started, key=lambda e: e.id)
            self.pane("machines").set_quirks(newest.data.get("quirks") or {})

    async def _find_demo_start(self) -> None:
        """A demo started long ago (its event out of the first screen's events)."""
        if self.pane("machines").quirks:
            return
        for site in self.engine.profile.sites:
            if site.distributor is not None:
                self._note_demo(await self.engine.events(50, site.name))

    def _load_distributors(self, distributors) -> None:
        """With the machines each has seen, counted from the machines pane (unknown,
        "-", while that pane holds only its first rows)."""
        machines = self.pane("machines")
        seen = None if machines.expected is not None else machines.table.counts["distributor"]
        self.pane("distributors").load((d, seen.get(d.name, 0) if seen is not None else None)
                                       for d in distributors)


    def _tick(self) -> None:
        for kind in ("machines", "nodes", "jobs"):  # the panes with "time since" columns
            pane = self.pane(kind)
            if pane is not None and pane.table.row_count and pane.display:
                pane.table.refresh()
        self._update_header()
        # Sightings and liveness rounds move last_seen without an event: re-read the
        # rows on screen, so "Since" tracks the store as `machines` does.
        # (a remote site's rows follow its replica: _follow_sites)
        on_screen = {kind: [k for k in self.pane(kind).table.keys_on_screen()
                            if self.pane(kind).table.rows[k].fields.get("site")
                            not in self.remote_sites]
                     for kind in ("machines", "nodes")
                     if self.pane(kind) is not None and self.pane(kind).region.area}
        if self.engine is not None and not self._refreshing and any(on_screen.values()):
            self._refreshing = True
            self.run_worker(partial(self._refresh_seen, on_screen.get("machines", []),
                                    on_screen.get("nodes", [])),
                            group="refresh", exit_on_error=False)

    async def _refresh_seen(self, macs: list, names: list) -> None:
        engine = self.engine
        try:
            machines = [await engine.find_machine(str(mac)) for mac in macs]
            nodes = [await engine.find_node(str(name)) for name in names]
            self.pane("machines").update(m for m in machines if m is not None)
            self.pane("nodes").update(n for n in nodes if n is not None)
        except FleetError:
            pass  # the next tick or refresh tries again
        finally:
            self._refreshing = False
            if self._pending or self._full_reload:
                self._schedule()

    def _update_header(self) -> None:
        header = self._header
        m = self.pane("machines").table
        states = m.counts["state"]
        jobs = self.pane("jobs").table
        running = sum(1 for r in jobs.rows.values() if r.fields.get("state") == "running")
        dist = self.pane("distributors").table
        on = sum(1 for r in dist.rows.values() if r.fields.get("on") == "on")
        # a small terminal's header is short: it stands in for the jobs and
        # distributors panes the dashboard leaves out
        narrow = self.screen_stack[0].has_class("-narrow")
        name = _esc(self.profile.name)
        parts = [f"[b]{name}[/b]" if narrow else f"fleet · profile [b]{name}[/b]"]
        if self.read_only:
            parts.append("[b reverse] READ-ONLY [/]")
        machines = self.pane("machines")
        failed = states.get('failed', 0) + states.get('stalled', 0)
        if machines.expected is not None:
            parts.append(f"{machines.total} machines (loading…)")
        elif narrow:
            parts.append(f"{len(m.rows)} machines: {states.get('discovered', 0)} unleased, "
                         f"{failed} failed")
        else:
            parts.append(f"{len(m.rows)} machines ({states.get('discovered', 0)} unleased, "
                         f"{failed} failed/stalled)")
        parts.append(f"{self.pane('nodes').total} nodes")
        parts.append(f"{running} jobs" if narrow else f"{running} jobs running")
        parts.append(f"{on}/{len(dist.rows)} dist on" if narrow else
                     f"{on}/{len(dist.rows)} distributors on")
        text = (" · " if narrow else "  ·  ").join(parts)
        if text != getattr(self, "_header_text", None):  # an update costs a layout pass
            self._header_text = text
            header.update(text)
        header.set_class(self.read_only, "read-only")

    async def action_reload(self) -> None:
        self._full_reload = True
        self._schedule(0)

    # -- the engine's facades, when this engine has them ------------------------------------

    def _facade(self, name: str):
        if self.engine is None:
            return None
        try:
            return getattr(self.engine, name)
        except (ImportError, AttributeError):
            return None

    @property
    def access(self):
        return self._facade("access")

    @property
    def jobs(self):
        return self._facade("jobs")

    # -- key handling ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in SHELL_ACTIONS:  # priority keys: only where a shell tab can use them
            return len(self.screen_stack) == 1 and self.check_shell_action(action)
        if action in DASHBOARD_ACTIONS and self.shells.active() is not None:
            return False  # a shell tab: the dashboard's keys are not for it
        if action in DASHBOARD_ACTIONS and len(self.screen_stack) > 1:
            return False  # dialogs and detail screens own the keyboard
        if action in DASHBOARD_ACTIONS and self.focused is self._cmdline:
            return False
        return True

    def action_focus_pane(self, kind: str) -> None:
        pane = self.pane(kind)
        if pane is None:
            return
        tabs = self.screen_stack[0].query_one("#tabs", TabbedContent)
        switched = tabs.active != "tab-dashboard"
        if switched:
            tabs.active = "tab-dashboard"
        if not self._on_dashboard(pane):
            self.screen.maximized = pane  # a small terminal's dashboard leaves it out
        elif self.screen.maximized is not None and self.screen.maximized is not pane:
            self.screen.maximized = pane
        if switched:
            pane.table.focus()  # once the dashboard is shown again
        else:
            # now, not via call_later (Widget.focus): keys typed right behind, as in
            # `2/web`, must find the focus (and current_pane) already moved
            self.screen.set_focus(pane.table)

    def _on_dashboard(self, pane: Pane) -> bool:
        """Whether the dashboard's layout shows this pane (not at small widths; the
        sites pane only with remote sites)."""
        narrow = self.screen_stack[0].has_class("-narrow")
        if pane.kind == "sites":
            return not narrow and pane.has_class("-on-dashboard")
        return not (narrow and pane.kind in ("distributors", "jobs"))

    def action_toggle_maximize(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            pane = self.current_pane()
            self.screen.maximized = pane
            pane.table.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self.config.keymap)))

    def action_back(self) -> None:
        cmd = self._cmdline
        if cmd.has_class("open"):
            self._close_cmdline()
            return
        pane = self.current_pane()
        table = pane.table
        if table.filter or pane.selection_label:
            pane.selection_label = ""
            table.key_filter = None
            table.set_filter("")
            pane.update_title()
        elif table.marks:
            table.clear_marks()
            pane.update_title()
        elif self.screen.maximized is not None:
            self.screen.minimize()

    # -- the command line (`:` and `/`) ------------------------------------------------------

    def action_command_mode(self) -> None:
        self._open_cmdline(":")

    def action_filter_mode(self) -> None:
        self._open_cmdline("/")

    def _open_cmdline(self, mode: str) -> None:
        self._cmd_mode = mode
        self._cmd_pane = self.current_pane()
        self._return_focus = self._cmd_pane.table
        cmd = self._cmdline
        cmd.add_class("open")
        if mode == "/":
            cmd.value = "/" + self.current_pane().table.filter.text
        else:
            cmd.value = ":"
        cmd.cursor_position = len(cmd.value)
        if len(cmd.value) > 1:  # the old filter, selected: typing replaces it
            cmd.selection = Selection(1, len(cmd.value))
        # focus now, not via call_later (Widget.focus): keys typed right after `/`
        # (a paste, a fast typist, tmux send-keys) went to the table as verbs
        self.screen.set_focus(cmd)

    def on_key(self, event: events.Key) -> None:
        """Keys typed right behind `/` or `:` were queued for the table before the
        command line took focus; they reach the app and belong to the command line."""
        cmd = self._cmdline
        if self.focused is cmd and event.is_printable and event.character:
            if cmd.selection.is_empty:
                cmd.insert_text_at_cursor(event.character)
            else:
                cmd.replace(event.character, *cmd.selection)
            event.stop()

    def _close_cmdline(self) -> None:
        cmd = self._cmdline
        cmd.remove_class("open")
        cmd.value = ""
        target = getattr(self, "_return_focus", None) or self.pane("machines").table
        target.focus()

    @on(Input.Submitted, "#cmdline")
    async def _cmdline_submitted(self, event: Input.Submitted) -> None:
        text, mode = event.value, self._cmd_mode
        if text[:1] in (":", "/"):
            mode, text = text[0], text[1:]
        self._close_cmdline()
        if mode == "/":
            self.apply_filter(text, getattr(self, "_cmd_pane", None))
        else:
            await self.run_command(text)

    def apply_filter(self, text: str, pane: Pane | None = None) -> bool:
        pane = pane or self.current_pane()
        table = pane.table
        try:
            table.set_filter(text)
        except ValueError as err:
            self.notify(str(err), severity="error")
            return False
        pane.update_title()
        unknown = table.filter.field_keys() - table.field_keys()
        if unknown and table.rows:
            self.notify(f"no {pane.kind} have {', '.join(sorted(unknown))}; filter keys "
                        f"here: {', '.join(sorted(table.field_keys()))}", severity="warning")
        return True

    async def run_command(self, text: str) -> None:
        words = text.strip().split(None, 1)
        if not words:
            return
        word, rest = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
        command = ALIASES.get(word)
        if command is None:
            self.notify(f"unknown command :{word} (:help lists them)", severity="error")
        elif command == "quit":
            if word == "q!":
                self.exit()
            else:
                await self.action_quit()
        elif command == "help":
            self.action_help()
        elif command == "theme":
            if rest:
                self.set_theme(rest)
            else:
                self.search_themes()
        elif command == "dash":
            self.screen.minimize()
        elif command == "unleased":
            self._show_pane("machines", "state=discovered " + rest)
        elif command == "nodes" and rest:
            await self._select_nodes(rest)
        else:
            self._show_pane(command, rest)

    def _show_pane(self, kind: str, filter_text: str = "") -> None:
        pane = self.pane(kind)
        self.screen.maximized = pane
        pane.table.focus()
        if filter_text.strip() or pane.table.filter:
            self.apply_filter(filter_text.strip(), pane)

    async def _select_nodes(self, expr: str) -> None:
        """`:nodes site=rack1`: the engine's selection syntax picks the rows."""
        try:
            chosen = await self.engine.nodes(expr)
        except FleetError as err:
            self.notify(str(err), severity="error")
            return
        pane = self.pane("nodes")
        pane.table.key_filter = {n.name for n in chosen}
        pane.selection_label = f"select {expr}"
        pane.table.rebuild()
        pane.update_title()
        self.screen.maximized = pane
        pane.table.focus()

    # -- verbs: each pane binds its own; here, why one is not available -------------------

    def action_unavailable(self, kind: str, action: str) -> None:
        """A pane verb's key pressed where that verb cannot run (see
        `unavailable_bindings`): say why, in the words the verb would use."""
        owner = self.pane(kind)
        verb = {b.action: b.description for b in type(owner).BINDINGS}.get(action, action)
        if self.read_only and action in owner.WRITES:
            self.notify(f"read-only: cannot {owner.WRITES[action]} "
                        "(fleet was started with --read-only)", severity="warning")
        elif self.current_pane() is not owner:
            self.notify(f"{verb.lower()} works on the {kind} pane ({owner.number})",
                        severity="warning")
        else:
            self.notify(f"no {kind} selected", severity="warning")

    def show_record(self, kind: str, key: Hashable) -> None:
        """Focus the row and open its details (the palette uses this)."""
        pane = self.pane(kind)
        if pane is not None:
            pane.table.focus()
            pane.table.move_cursor_to(key)
            pane.open_record(key, raw=False)


def _esc(text: str) -> str:
    return text.replace("[", r"\[")
