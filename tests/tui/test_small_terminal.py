"""An 80x24 terminal: machines and nodes get the width (distributors and jobs
leave the dashboard and zoom in with 3 and 4); the last column of a table (an
event's message) takes what the others leave; `/` reopens with the old filter
selected, so typing replaces it; an unknown filter key says so."""

from __future__ import annotations

from fleet.tui.app import FleetApp
from tui.conftest import ready, settle
from tui.seed import MACS


def app_for(engine) -> FleetApp:
    return FleetApp(engine.profile, engine=engine, blink=False)


async def test_main_panes_get_the_room_at_80x24(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        machines, nodes = app.pane("machines"), app.pane("nodes")
        assert machines.region.width == 80 and nodes.region.width == 80
        assert not app.pane("distributors").region.area
        assert not app.pane("jobs").region.area
        assert machines.table.region.height >= 5  # header and a few machines
        header = str(app.query_one("#header").render())
        assert len(header) <= 78 and " jobs · " in header and "1/2 dist on" in header
        assert "SINCE" in "".join(s.text for s in machines.table.render_line(0))
        await pilot.press("4")  # a pane left out of the dashboard zooms in
        await pilot.pause()
        dists = app.pane("distributors")
        assert app.screen.maximized is dists and dists.region.width == 80
        assert app.current_pane() is dists
        await pilot.press("z")  # back to the dashboard, without it
        await pilot.pause()
        assert app.screen.maximized is None and not dists.region.area
        await pilot.press("1")
        assert app.current_pane() is machines


async def test_wide_terminal_keeps_every_pane(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await ready(pilot)
        for kind in ("machines", "nodes", "jobs", "distributors", "events"):
            assert app.pane(kind).region.area, kind
        await pilot.press("3")
        await pilot.pause()
        assert app.screen.maximized is None  # focus only, as before


async def test_event_messages_use_the_width(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot)
        table = app.pane("events").table
        messages = [row.values[-1] for row in table.rows.values()]
        assert max(len(m) for m in messages) > 70  # longer than the column's own width
        lines = ["".join(s.text for s in table.render_line(y))
                 for y in range(1, table.row_count + 1)]
        for message in messages:
            assert any(message in line for line in lines), message  # whole, not cut


async def test_slash_reopens_with_the_old_filter_replaced_by_typing(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await ready(pilot)
        table = app.pane("machines").table
        await pilot.press("slash", *"52:54", "enter")
        assert table.filter.text == "52:54"
        await pilot.press("slash")
        assert app._cmdline.value == "/52:54"
        await pilot.press(*"qemu", "enter")
        assert table.filter.text == "qemu"
        assert set(table.visible_keys()) == {MACS[0][0], MACS[1][0]}
        await pilot.press("slash", "end", *" !failed", "enter")  # or edit it
        assert table.filter.text == "qemu !failed"


async def test_unknown_filter_key_says_so(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await ready(pilot)
        await pilot.press("slash", *"colour=red", "enter")
        notes = [n.message for n in app._notifications]
        assert any("no machines have colour" in n and "state" in n for n in notes), notes
        await pilot.press("escape", "2", "slash", *"role=web", "enter")
        assert await settle(pilot, lambda: app.pane("nodes").table.row_count == 2)
        assert sum("no " in n and " have " in n for n in
                   (n.message for n in app._notifications)) == 1  # a label is a key


async def test_the_build_form_fits_80x24(seeded_engine):
    from fleet.tui.screens.build import BuildDialog

    app = app_for(seeded_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("4")
        await pilot.pause()
        await pilot.press("b")
        assert await settle(pilot, lambda: isinstance(app.screen, BuildDialog)
                            and app.screen.query("#build"))
        await pilot.pause()
        button = app.screen.query_one("#build").region
        assert button.height and button.bottom <= 24  # on screen, not cut off


async def test_help_and_exec_fit_80_columns(seeded_engine):
    from fleet.tui.screens.exec import ExecDialog
    from fleet.tui.screens.help import HelpScreen

    app = app_for(seeded_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert await settle(pilot, lambda: isinstance(app.screen, HelpScreen)
                            and app.screen.query("#bindings"))
        await pilot.pause()
        box = app.screen.query_one("VerticalScroll").region
        assert box.x >= 0 and box.right <= 80
        await pilot.press("escape", "2")
        await pilot.press("x")
        assert await settle(pilot, lambda: isinstance(app.screen, ExecDialog)
                            and app.screen.query("#run"))
        await pilot.pause()
        box = app.screen.query_one("#run").region
        assert box.width and box.right <= 80
