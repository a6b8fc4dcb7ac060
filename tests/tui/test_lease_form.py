"""The lease form by keyboard, as its labels say: enter on the first field leases;
with several machines, tab goes from the deployment through one hostname and
address per machine, and what was typed is what gets leased."""

from __future__ import annotations

from textual.widgets import Input

from fleet.core.model import MachineState
from fleet.tui.app import FleetApp
from fleet.tui.screens.lease import LeaseDialog
from tui.conftest import ready, settle
from tui.seed import MACS

SIZE = (120, 40)
FREE, FREE2, FREE3 = MACS[0][0], MACS[1][0], MACS[4][0]


async def open_form(pilot, *macs: str) -> LeaseDialog:
    app = pilot.app
    table = app.pane("machines").table
    app.action_focus_pane("machines")
    await pilot.pause()
    for mac in macs if len(macs) > 1 else ():
        assert table.move_cursor_to(mac)
        await pilot.press("space")
    if len(macs) == 1:
        assert table.move_cursor_to(macs[0])
    await pilot.press("l")
    assert await settle(pilot, lambda: isinstance(app.screen, LeaseDialog)
                        and app.screen.query("#deployment"))
    await pilot.pause()
    return app.screen


async def test_enter_on_the_deployment_leases(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        dialog = await open_form(pilot, FREE)
        assert app.focused is dialog.query_one("#deployment")
        await pilot.press("enter")
        assert await settle(pilot, lambda: not isinstance(app.screen, LeaseDialog))
        machine = await seeded_engine.machine(FREE)
        assert machine.state is MachineState.LEASED
        assert machine.lease.deployment == "debian12"  # the first, preselected


async def test_several_machines_each_get_the_hostname_typed_for_it(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        dialog = await open_form(pilot, FREE, FREE2, FREE3)
        assert len(dialog.macs) == 3
        fields = list(dialog.query(".hostname").results(Input))
        assert len(fields) == 3 and not any(f.disabled for f in fields)
        await pilot.press("tab")  # deployment -> the first machine's hostname
        assert app.focused is dialog.query_one("#hostname-0")
        await pilot.press(*"api1", "tab")  # -> its address
        assert app.focused is dialog.query_one("#address-0")
        await pilot.press(*"10.91.0.31", "tab", *"api2", "tab", "tab", *"api3", "enter")
        assert await settle(pilot, lambda: not isinstance(app.screen, LeaseDialog))
        leases = {m: (await seeded_engine.machine(m)).lease for m in (FREE, FREE2, FREE3)}
        by_mac = dict(zip(dialog.macs, ("api1", "api2", "api3")))
        assert {m: lease.hostname for m, lease in leases.items()} == by_mac
        assert leases[dialog.macs[0]].address == "10.91.0.31"
        assert leases[dialog.macs[1]].address is None


async def test_a_failed_machine_keeps_the_form_and_a_retry_skips_the_leased(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        dialog = await open_form(pilot, FREE, FREE2)
        dialog.query_one("#address-1", Input).value = "10.91.0.999"
        await pilot.press("tab", "enter")
        error = dialog.query_one("#error")
        assert await settle(pilot, lambda: "10.91.0.999" in str(error.render()))
        assert "1 leased" in str(error.render()) and dialog.macs[1] in str(error.render())
        assert isinstance(app.screen, LeaseDialog)
        dialog.query_one("#address-1", Input).value = ""
        await pilot.press("enter")
        assert await settle(pilot, lambda: not isinstance(app.screen, LeaseDialog))
        for mac in (FREE, FREE2):
            assert (await seeded_engine.machine(mac)).state is MachineState.LEASED


def burst(app, keys: list[str]) -> None:
    """Keys as a fast typist or a paste sends them: all queued at once (the pilot
    waits for each key to be handled before the next; a terminal does not)."""
    from textual import events

    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else None))


async def test_fast_typing_after_tab_lands_in_the_next_field(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        dialog = await open_form(pilot, FREE, FREE2)
        burst(app, ["tab", *"web1", "tab", "tab", *"web2"])
        await pilot.pause(0.3)
        assert dialog.query_one("#hostname-0", Input).value == "web1"
        assert dialog.query_one("#hostname-1", Input).value == "web2"
        burst(app, ["shift+tab", "shift+tab", *"api1"])  # a field tabbed into is selected
        await pilot.pause(0.3)
        assert dialog.query_one("#hostname-0", Input).value == "api1"
