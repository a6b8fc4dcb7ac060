"""SINCE tracks the store's last_seen as the headless `machines` does: sightings
touch last_seen without an event, so the console re-reads the rows on screen on
its 2 s tick instead of waiting for the 30 s reconcile."""

from __future__ import annotations

from fleet.tui.app import FleetApp
from tui.conftest import ready, settle
from tui.seed import MACS

SIZE = (160, 50)
MAC = MACS[0][0]


async def test_since_follows_sightings_without_events(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        table = app.pane("machines").table
        since = [c.key for c in table.columns].index("last_seen")
        old = table.rows[MAC].values[since]
        events_before = await seeded_engine.last_event_id()
        seeded_engine.clock.now += 40
        seeded_engine.record_sighting(MAC)  # as the boot services do on every poll
        await seeded_engine.flush_sightings()
        assert await seeded_engine.last_event_id() == events_before  # no event to follow
        assert (await seeded_engine.machine(MAC)).last_seen == seeded_engine.clock.now
        assert await settle(pilot, lambda: table.rows[MAC].values[since] > old, 200)
        assert table._cells(table.rows[MAC].values, seeded_engine.clock.now)[since] == "0s"
        assert MAC not in table.changed  # time moving on is not flashed as a change
