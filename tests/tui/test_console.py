"""Pilot tests: every verb and dialog the console has, against a seeded engine."""

from __future__ import annotations

from textual.widgets import Checkbox, Input, Select

from fleet.core.model import MachineState
from fleet.tui.app import FleetApp
from fleet.tui.screens.build import BuildDialog
from fleet.tui.screens.confirm import ConfirmDialog
from fleet.tui.screens.details import DetailsScreen, RawScreen
from fleet.tui.screens.exec import ExecDialog
from fleet.tui.screens.help import HelpScreen
from fleet.tui.screens.lease import LeaseDialog
from tui.conftest import ready, settle
from tui.seed import MACS

SIZE = (160, 50)
FREE = MACS[0][0]  # discovered
FREE2 = MACS[1][0]  # discovered
LEASED = MACS[2][0]  # leased (web7)


def app_for(engine, **kw) -> FleetApp:
    return FleetApp(engine.profile, engine=engine, blink=False, **kw)


async def goto(pilot, kind: str, key) -> None:
    pane = pilot.app.pane(kind)
    pane.table.focus()
    assert pane.table.move_cursor_to(key)
    await pilot.pause()


async def test_dashboard_loads_every_pane(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert len(app.pane("machines").table.rows) == 6
        assert set(app.pane("nodes").table.rows) == {"web1", "db1", "edge1"}
        assert set(app.pane("jobs").table.rows) == {1, 2, 3}
        assert set(app.pane("distributors").table.rows) == {"rack1", "rack2"}
        assert len(app.pane("events").table.rows) >= 10
        header = str(app.query_one("#header").render())
        assert "6 machines (3 unleased" in header and "3 nodes" in header
        assert f"profile {seeded_engine.profile.name}" in header and "READ-ONLY" not in header
        assert "1 jobs running" in header and "1/2 distributors on" in header
        assert "updated" in app.pane("machines").border_subtitle
        # machines seen per distributor, counted from the machines pane
        assert app.pane("distributors").table.rows["rack1"].values[-1] == 4


async def test_feed_updates_panes_and_marks_changed_cells(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        before = app.refresh_count
        await seeded_engine.lease(FREE, "debian12", "api1")  # a change from "elsewhere"
        table = app.pane("machines").table
        assert await settle(pilot, lambda: table.rows[FREE].fields["state"] == "leased")
        assert await settle(pilot, lambda: app.refresh_count > before)
        assert FREE in table.changed  # the changed cells are marked for a moment
        assert any(r.values[2] == "machine.leased" and r.values[3] == FREE
                   for r in app.pane("events").table.rows.values())


async def test_burst_of_changes_is_coalesced(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        before = app.refresh_count
        for mac in (FREE, FREE2):
            await seeded_engine.lease(mac, "rocky9")
            await seeded_engine.release(mac)
            await seeded_engine.lease(mac, "debian12")
        table = app.pane("machines").table
        assert await settle(pilot, lambda: table.rows[FREE2].values[7] == "debian12")
        await pilot.pause(0.3)
        assert app.refresh_count - before <= 3  # six events, at most a few refreshes


async def test_lease_form_leases_in_the_store(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", FREE)
        await pilot.press("l")
        assert await settle(pilot, lambda: isinstance(app.screen, LeaseDialog))
        dialog = app.screen
        dialog.query_one("#deployment", Select).value = "rocky9"
        dialog.query_one("#hostname", Input).value = "db9"
        dialog.query_one("#address", Input).value = "10.91.0.99"
        await pilot.click("#lease")
        assert await settle(pilot, lambda: not isinstance(app.screen, LeaseDialog))
        machine = await seeded_engine.machine(FREE)
        assert machine.state is MachineState.LEASED
        assert (machine.lease.deployment, machine.lease.hostname,
                machine.lease.address) == ("rocky9", "db9", "10.91.0.99")


async def test_lease_form_shows_engine_errors_inline(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", FREE)
        await pilot.press("l")
        assert await settle(pilot, lambda: isinstance(app.screen, LeaseDialog))
        app.screen.query_one("#address", Input).value = "10.91.0.999"
        await pilot.click("#lease")
        error = app.screen.query_one("#error")
        assert await settle(pilot, lambda: "10.91.0.999" in str(error.render()))
        assert isinstance(app.screen, LeaseDialog)  # stays open to fix it
        assert (await seeded_engine.machine(FREE)).state is MachineState.DISCOVERED


async def test_release_confirm_names_macs_and_wipes(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", LEASED)
        await pilot.press("r")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert LEASED in str(app.screen.query_one("#targets").render())
        app.screen.query_one("#wipe", Checkbox).value = True
        await pilot.click("#confirm")
        assert await settle(pilot, lambda: app.pane("machines").table.rows[LEASED]
                            .fields["state"] == "wiping")
        assert (await seeded_engine.machine(LEASED)).state is MachineState.WIPING


async def test_release_cancel_changes_nothing(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", LEASED)
        await pilot.press("r")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        assert (await seeded_engine.machine(LEASED)).state is MachineState.LEASED


async def test_read_only_refuses_every_change(tmp_path):
    from tui.seed import open_seeded

    engine = await open_seeded(tmp_path, read_only=True)
    try:
        app = app_for(engine)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert "READ-ONLY" in str(app.query_one("#header").render())
            await goto(pilot, "machines", FREE)
            for key in ("l", "r", "b"):
                await pilot.press(key)
                await pilot.pause()
                assert not isinstance(app.screen, (LeaseDialog, ConfirmDialog, BuildDialog))
            await goto(pilot, "distributors", "rack1")
            await pilot.press("o")
            await goto(pilot, "nodes", "web1")
            await pilot.press("x")
            await pilot.pause()
            assert app.screen is app.screen_stack[0]
            notes = [n.message for n in app._notifications]
            assert sum("read-only" in n for n in notes) == 5
        assert (await engine.machine(FREE)).state is MachineState.DISCOVERED
    finally:
        await engine.close()


async def mark_machines(pilot, *macs: str) -> None:
    """Mark these machines' rows (space on each) in the machines pane."""
    for mac in macs:
        await goto(pilot, "machines", mac)
        await pilot.press("space")


async def test_marks_select_targets_for_release(seeded_engine):
    await seeded_engine.lease(FREE, "debian12")
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await mark_machines(pilot, FREE, LEASED)
        table = app.pane("machines").table
        assert table.marks == {FREE, LEASED}
        assert "2 marked" in app.pane("machines").border_title
        await pilot.press("r")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        targets = str(app.screen.query_one("#targets").render())
        assert FREE in targets and LEASED in targets
        await pilot.click("#confirm")
        assert await settle(pilot, lambda: table.rows[FREE].fields["state"] == "discovered")
        assert (await seeded_engine.machine(LEASED)).state is MachineState.DISCOVERED
        assert not table.marks  # marks clear after the verb
        await pilot.press("space")
        await pilot.press("escape")  # esc clears marks
        assert not table.marks


async def test_filter_regex_inverse_and_labels(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", FREE)
        await pilot.press("slash", *"52:54", "enter")
        table = app.pane("machines").table
        assert set(table.visible_keys()) == {MACS[0][0], MACS[1][0]}
        await pilot.press("slash", "ctrl+u", *"!qemu", "enter")
        assert len(table.visible_keys()) == 4
        await pilot.press("escape")
        assert table.row_count == 6
        await goto(pilot, "nodes", "web1")
        await pilot.press("slash", *"role=web", "enter")
        assert set(app.pane("nodes").table.visible_keys()) == {"web1", "edge1"}
        await pilot.press("slash", "ctrl+u", *"[bad", "enter")
        assert any("bad filter" in n.message for n in app._notifications)
        assert set(app.pane("nodes").table.visible_keys()) == {"web1", "edge1"}


async def test_command_aliases(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for command, kind in ((":no", "nodes"), (":jobs", "jobs"), (":dist", "distributors"),
                              (":ev", "events"), (":machines", "machines")):
            await pilot.press("colon", *command[1:], "enter")
            assert app.screen.maximized is app.pane(kind), command
            assert app.current_pane().kind == kind
        await pilot.press("colon", *"unleased", "enter")
        assert len(app.pane("machines").table.visible_keys()) == 3
        await pilot.press("colon", *"nodes site=rack1", "enter")
        assert set(app.pane("nodes").table.visible_keys()) == {"web1", "db1"}
        await pilot.press("escape")  # clears the selection
        assert app.pane("nodes").table.row_count == 3
        await pilot.press("escape")  # back to the dashboard
        assert app.screen.maximized is None
        await pilot.press("colon", *"nope", "enter")
        assert any("unknown command :nope" in n.message for n in app._notifications)
        await pilot.press("colon", "q", "enter")
        await pilot.pause()
    assert app.return_code == 0


async def test_focus_numbers_tab_and_zoom(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2")
        assert app.current_pane().kind == "nodes"
        await pilot.press("5")
        assert app.current_pane().kind == "events"
        await pilot.press("tab")
        assert app.current_pane().kind != "events"
        await pilot.press("z")
        assert app.screen.maximized is app.current_pane()
        await pilot.press("z")
        assert app.screen.maximized is None


async def test_details_and_raw_views(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "machines", LEASED)
        await pilot.press("enter")
        assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen))
        fields = str(app.screen.query_one("#fields").render())
        assert "web7" in fields and "debian12" in fields
        assert "machine.leased" in str(app.screen.query_one("#events").render())
        await pilot.press("escape")
        await goto(pilot, "nodes", "edge1")
        await pilot.press("y")
        assert await settle(pilot, lambda: isinstance(app.screen, RawScreen))
        assert "public_ipv4: 203.0.113.10" in app.screen.text()
        await pilot.press("t")
        assert '"public_ipv4": "203.0.113.10"' in app.screen.text()
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


async def test_distributor_switch_confirm(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "distributors", "rack1")
        await pilot.press("o")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "rack1 off" in app.screen.title_text
        await pilot.click("#confirm")
        table = app.pane("distributors").table
        assert await settle(pilot, lambda: table.rows["rack1"].fields["on"] == "off")
        assert not {d.name: d for d in await seeded_engine.distributors()}["rack1"].enabled


async def test_copy_uses_the_clipboard(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "nodes", "db1")
        await pilot.press("c")
        assert app.clipboard == "db1"


async def test_help_lists_bindings_with_ids(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert await settle(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.query_one("#bindings").render())
        for bid in ("verb.lease", "verb.release", "app.filter", "table.mark", "pane.maximize"):
            assert bid in text


async def test_access_verbs(seeded_engine, monkeypatch):
    app = app_for(seeded_engine)
    shells = []
    app.shell_runner = lambda node: shells.append(node) or 0
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "nodes", "web1")
        await pilot.press("s")
        assert shells == ["web1"]
        await pilot.press("x")
        assert await settle(pilot, lambda: isinstance(app.screen, ExecDialog))
        assert "web1" in str(app.screen.query_one(".targets").render())
        await pilot.press("escape")
        await pilot.press("f")
        assert any("port forwards" in n.message for n in app._notifications)


async def test_build_degrades_without_the_jobs_facade(seeded_engine, monkeypatch):
    monkeypatch.setattr(FleetApp, "jobs", property(lambda self: None))
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "distributors", "rack1")  # build is the distributors pane's verb
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        assert any("builds arrive with the job runner" in n.message
                   for n in app._notifications)


async def test_access_verbs_degrade_without_the_access_plane(seeded_engine, monkeypatch):
    app = app_for(seeded_engine)
    monkeypatch.setattr(FleetApp, "access", property(lambda self: None))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto(pilot, "nodes", "web1")
        for key in ("s", "x", "f"):
            await pilot.press(key)
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        notes = [n.message for n in app._notifications]
        assert sum("arrive with the access plane" in n for n in notes) == 3


async def test_build_form_submits_through_the_builds_facade(tmp_path):
    from tui.seed import open_seeded

    calls = []

    class FakeBuilds:
        async def build(self, kind, **options):
            calls.append((kind, options))

            class Outcome:
                job_id = 42
            return Outcome()

    engine = await open_seeded(tmp_path, builds=FakeBuilds())
    try:
        app = app_for(engine)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await goto(pilot, "distributors", "rack1")
            await pilot.press("b")
            assert await settle(pilot, lambda: isinstance(app.screen, BuildDialog))
            app.screen.query_one("#kind", Select).value = "iso"
            app.screen.query_one("#build").press()
            assert await settle(pilot, lambda: calls)
            assert calls == [("iso", {"wait": False, "distributor": "rack1"})]
            assert await settle(pilot, lambda: any("job 42" in n.message
                                                   for n in app._notifications))
    finally:
        await engine.close()


async def test_palette_provider_finds_nodes_macs_and_jobs(seeded_engine):
    from fleet.tui.commands import FleetCommands

    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        texts = [t for t, _, _ in FleetCommands(app.screen)._entries()]
        assert "node edge1" in texts and f"machine {LEASED}" in texts and "job 2" in texts
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"edge1")
        await pilot.pause(0.5)
        await pilot.press("enter")
        assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen))
        assert app.screen.title_text == "node edge1"


async def test_exec_dialog_streams_lines_through_the_access_facade(tmp_path):
    from types import SimpleNamespace

    from tui.seed import open_seeded

    ran = []

    class FakeAccess:
        def route(self, node):
            return SimpleNamespace(kind=SimpleNamespace(value="jump"), chain=("gw1",))

        async def targets(self, names):
            return [await engine.node(n) for n in names]

        async def close(self):
            pass

        async def exec(self, nodes, command, on_line=None, on_result=None):
            ran.append(([n.name for n in nodes], command))
            for n in nodes:
                on_line(n.name, "stdout", f"up 3 days on {n.name}")
                on_result(SimpleNamespace(node=n.name, ok=True, error_kind="ok", error=None,
                                          exit_status=0, duration_s=0.1, via="gw1"))
            return SimpleNamespace(results=[1] * len(nodes), failed=[], duration_s=0.2)

    engine = await open_seeded(tmp_path, access=FakeAccess())
    try:
        app = app_for(engine)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.pane("nodes").table._cells(app.pane("nodes").table.rows["web1"].values,
                                                  0)[3] == "via gw1"
            await goto(pilot, "nodes", "web1")
            await pilot.press("space")  # mark web1 and db1
            await goto(pilot, "nodes", "db1")
            await pilot.press("space")
            await pilot.press("x")
            assert await settle(pilot, lambda: isinstance(app.screen, ExecDialog))
            app.screen.query_one("#command", Input).value = "uptime"
            app.screen.query_one("#run").press()
            assert await settle(pilot, lambda: ran)
            assert ran == [(["db1", "web1"], "uptime")]
            log = app.screen.query_one("#output")
            assert await settle(pilot, lambda: len(log.lines) >= 5)
            text = "\n".join(line.text for line in log.lines)
            assert "web1: up 3 days on web1" in text and "2 ok, 0 failed" in text
    finally:
        await engine.close()


async def test_more_tabs_can_join_the_dashboard(seeded_engine):
    """Node shells, broadcast and recordings arrive later as tabs next to the dashboard."""
    from textual.widgets import Static, TabbedContent

    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.add_tab("web1", Static("shell placeholder", id="shell-web1"), "tab-web1")
        await pilot.pause()
        tabs = app.query_one("#tabs", TabbedContent)
        assert tabs.active == "tab-web1"
        assert not app.pane("machines").table.region.area  # the dashboard is hidden
        await pilot.press("1")  # a pane key brings the dashboard back
        await pilot.pause()
        assert tabs.active == "tab-dashboard" and app.current_pane().kind == "machines"


async def test_release_says_what_it_did_per_machine(seeded_engine):
    """Several machines: the released ones, and those that held no lease named
    apart (nothing happened to them); one machine: the engine's own line."""
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await mark_machines(pilot, FREE, LEASED)
        await pilot.press("r")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#confirm")
        notes = lambda: [n.message for n in app._notifications]  # noqa: E731
        assert await settle(pilot, lambda: any(m.startswith("released 1: ") for m in notes()))
        summary = next(m for m in notes() if m.startswith("released 1: "))
        assert LEASED in summary.splitlines()[0]
        assert summary.splitlines()[1] == f"not leased: {FREE}"
        await goto(pilot, "machines", FREE)
        await pilot.press("r")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#confirm")
        assert await settle(pilot, lambda: any("nothing to release" in m and FREE in m
                                               for m in notes()))
        assert not [n for n in app._notifications if n.severity == "error"]


def test_release_summary_counts_retired_nodes():
    from fleet.core.lifecycle import Released
    from fleet.tui.panes.machines import release_summary

    class M:  # the summary reads only the MAC
        def __init__(self, mac):
            self.mac = mac

    outcomes = [Released(M("aa:00:00:00:00:01"), True, "x", retired="web1"),
                Released(M("aa:00:00:00:00:02"), True, "x", retired="web2"),
                Released(M("aa:00:00:00:00:03"), True, "x"),
                Released(M("aa:00:00:00:00:04"), False, "x")]
    assert release_summary(outcomes, wipe=True).splitlines() == [
        "released 3 (wipe): aa:00:00:00:00:01, aa:00:00:00:00:02, aa:00:00:00:00:03; "
        "2 nodes retired",
        "not leased: aa:00:00:00:00:04"]
    assert release_summary(outcomes[:1], wipe=False) == "x"
