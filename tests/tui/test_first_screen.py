"""Start-up at scale: the first rows of the big panes (and the totals) show from
a few LIMIT queries before the whole lists are loaded."""

from __future__ import annotations

import asyncio

import fleet.tui.app as app_module
from fleet.tui.app import FleetApp
from tui.conftest import ready, settle
from tui.seed import MACS

SIZE = (160, 50)


async def test_first_screen_then_the_whole_lists(seeded_engine, monkeypatch):
    monkeypatch.setattr(app_module, "FIRST_PAGE", 4)  # 6 machines: more than a page
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    gate = asyncio.Event()
    full_load = app._refresh_body

    async def held(*args):
        await gate.wait()
        await full_load(*args)

    app._refresh_body = held
    async with app.run_test(size=SIZE) as pilot:
        pane = app.pane("machines")
        assert await settle(pilot, lambda: "first_screen" in app.timings)
        await pilot.pause()
        first_four = sorted(m[0] for m in MACS)[:4]
        assert pane.table.visible_keys() == first_four  # the first rows, in the pane's order
        assert "4 of 6, loading…" in pane.border_title
        assert "6 machines (loading…)" in str(app.query_one("#header").render())
        assert len(app.pane("nodes").table.rows) == 3 and len(app.pane("jobs").table.rows) == 3
        gate.set()
        await ready(pilot)
        assert len(pane.table.rows) == 6 and pane.expected is None
        assert "loading" not in pane.border_title
        assert "6 machines (3 unleased" in str(app.query_one("#header").render())
        assert not pane.table.changed  # the first rows did not change: nothing marked
