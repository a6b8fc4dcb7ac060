"""Panes own their verbs: the footer shows what the focused pane can do, read-only
mode hides the verbs that write, row verbs are disabled with no row to act on,
and a verb's key pressed elsewhere says where it works."""

from __future__ import annotations

from fleet.tui.app import FleetApp
from fleet.tui.screens.lease import LeaseDialog
from tui.conftest import ready, settle
from tui.seed import open_seeded

SIZE = (160, 50)
VERBS = {"l", "r", "b", "o", "s", "x"}
OWN = {"machines": {"l", "r"}, "nodes": {"s", "x"}, "distributors": {"b", "o"},
       "jobs": set(), "events": set()}


def footer(app) -> dict[str, bool]:
    """key -> enabled, for the bindings the footer shows."""
    return {key: active.enabled for key, active in app.screen.active_bindings.items()
            if active.binding.show}


async def focus(pilot, kind: str) -> None:
    pilot.app.action_focus_pane(kind)
    await pilot.pause()


async def test_footer_shows_only_the_focused_panes_verbs(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for kind, own in OWN.items():
            await focus(pilot, kind)
            shown = footer(app)
            assert set(shown) & VERBS == own, kind
            assert all(shown[k] for k in own), kind
            assert shown.get("enter") is True, kind  # details: every pane's


async def test_read_only_hides_the_verbs_that_write(tmp_path):
    engine = await open_seeded(tmp_path, read_only=True)
    try:
        app = FleetApp(engine.profile, engine=engine, blink=False)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            for kind in OWN:
                await focus(pilot, kind)
                shown = footer(app)
                assert not set(shown) & VERBS, kind
                assert shown.get("enter") is True, kind  # reading stays
    finally:
        await engine.close()


async def test_row_verbs_are_disabled_without_a_row(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await focus(pilot, "machines")
        await pilot.press("slash", *"nothing-matches-this", "enter")
        assert await settle(pilot, lambda: app.pane("machines").table.row_count == 0)
        await pilot.pause()
        shown = footer(app)
        assert shown["l"] is False and shown["r"] is False and shown["enter"] is False
        await pilot.press("l")
        await pilot.pause()
        assert not isinstance(app.screen, LeaseDialog)
        assert any("no machines selected" in n.message for n in app._notifications)
        await pilot.press("escape")  # clears the filter: the verbs come back
        await pilot.pause()
        assert footer(app)["l"] is True
        await focus(pilot, "distributors")
        await pilot.press("slash", *"nothing-matches-this", "enter")
        await pilot.pause()
        assert footer(app)["b"] is True  # build needs no row
        assert footer(app)["o"] is False


async def test_a_verb_pressed_on_another_pane_says_where_it_works(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await focus(pilot, "nodes")
        await pilot.press("l")
        await focus(pilot, "machines")
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        notes = [n.message for n in app._notifications]
        assert "lease works on the machines pane (1)" in notes
        assert "build works on the distributors pane (4)" in notes


async def test_a_feed_flush_while_the_console_closes_does_not_crash(seeded_engine):
    """The change feed can deliver a batch after the screen is gone (quitting):
    the pane's footer update must not raise NoScreen and turn a clean exit into
    a traceback."""
    from fleet.core.model import Event, Severity

    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        pane = app.pane("events")
    late = Event(id=10**6, ts=0.0, kind="machine.seen", subject="x", severity=Severity.INFO,
                 message="late", data={})
    pane._had_targets = not pane.has_targets  # the next update changes the verbs' state
    pane.add([late])  # after the app closed: no screen any more
