"""The demo's misbehaving machines are labelled in the console: a flag in the
machines pane (explained in its title) and a note first on their details screen
saying what they do on purpose and the fix the README gives."""

from __future__ import annotations

from fleet.engine import Engine
from fleet.tui.app import FleetApp
from fleet.tui.screens.details import DetailsScreen
from support.profiles import use_isolated_env
from tui.conftest import ready, settle
from tui.seed import MACS, open_seeded

SIZE = (160, 50)


def flag_of(table, key) -> str:
    index = table.index_of(key)
    y = index + 1 - table.scroll_offset.y
    return "".join(s.text for s in table.render_line(y))[0]


async def test_the_live_demo_flags_its_misbehaving_machine(tmp_path, monkeypatch):
    from fleet.sim.profiles import free_ports, write_demo_profile

    use_isolated_env(monkeypatch, tmp_path)
    path = write_demo_profile(tmp_path, machines=6, misbehave=True, ports=free_ports(),
                              subnet_octet=189, options={"stagger_seconds": 0.1,
                                                         "ipxe_size": 2048,
                                                         "retry_seconds": 0.5})
    engine = await Engine.open(path)
    try:
        app = FleetApp(engine.profile, engine=engine, blink=False)  # starts the demo
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            pane = app.pane("machines")
            assert await settle(pilot, lambda: app.demo is not None and pane.quirks, 500)
            demo_quirks = {m.mac: m.quirk for m in app.demo.site.machines if m.quirk}
            assert pane.quirks == demo_quirks == {next(iter(demo_quirks)): "slow-firmware"}
            (mac,) = demo_quirks
            assert await settle(pilot, lambda: mac in pane.table.rows, 1000)
            assert "! misbehaves on purpose (demo)" in pane.border_title
            assert flag_of(pane.table, mac) == "!"
            others = [k for k in pane.table.rows if k != mac]
            assert others and all(flag_of(pane.table, k) == " " for k in others)
            pane.table.focus()
            pane.table.move_cursor_to(mac)
            await pilot.press("enter")
            assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen)
                                and app.screen.query("#note"))
            note = str(app.screen.query_one("#note").render())
            assert "slow firmware" in note and "reply_delay_ms: 100" in note
            assert "misbehave: false" in note
    finally:
        await engine.close()


async def test_a_demo_started_long_ago_is_still_labelled(tmp_path):
    """The console opened later, read-only, the demo's start far back in the events."""
    engine = await open_seeded(tmp_path)
    quirky = MACS[0][0]
    await engine.record(engine.event("demo.started", "rack1", "demo: 6 simulated machines",
                                     quirks={quirky: "stall"}))
    await engine.record(*[engine.event("test.noise", "x", f"noise {i}") for i in range(600)])
    engine.read_only = True
    try:
        app = FleetApp(engine.profile, engine=engine, blink=False)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            pane = app.pane("machines")
            assert await settle(pilot, lambda: pane.quirks == {quirky: "stall"})
            assert "stall watchdog" in pane.record_note(quirky)
            assert pane.record_note(MACS[1][0]) is None
    finally:
        await engine.close()
