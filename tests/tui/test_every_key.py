"""Every key the footer shows, pressed on every pane that shows it: each opens what
it says (its dialog, screen, tab or mode) and none crashes the console. A key the
footer shows that this table does not know fails the test, so a new verb gets
its check here."""

from __future__ import annotations

import pytest

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
ROW = {"machines": MACS[0][0], "nodes": "web1", "jobs": 2, "distributors": "rack1"}
SCREENS = {"details": DetailsScreen, "raw": RawScreen, "lease": LeaseDialog,
           "release": ConfirmDialog, "build": BuildDialog, "exec": ExecDialog,
           "switch_distributor": ConfirmDialog, "help": HelpScreen}


def shown_keys(app) -> dict[str, str]:
    """key -> action of the bindings the footer shows (enabled or not)."""
    return {key: active.binding.action for key, active in app.screen.active_bindings.items()
            if active.binding.show}


async def focus_row(pilot, kind: str) -> None:
    pane = pilot.app.pane(kind)
    pilot.app.action_focus_pane(kind)
    await pilot.pause()
    if kind in ROW:
        assert pane.table.move_cursor_to(ROW[kind])
    await pilot.pause()


async def back_to_dashboard(pilot) -> None:
    app = pilot.app
    for _ in range(5):
        if len(app.screen_stack) == 1:
            break
        app.pop_screen()
        await pilot.pause()
    app._close_cmdline()
    app.screen.minimize()
    for pane in app._panes.values():
        pane.table.clear_marks()
    await pilot.pause()


async def check_key(pilot, kind: str, key: str, action: str, shells: list) -> None:
    app = pilot.app
    where = f"{key} ({action}) on the {kind} pane"
    await pilot.press(key)
    if action in SCREENS:
        assert await settle(pilot, lambda: isinstance(app.screen, SCREENS[action])), where
    elif action == "shell":
        assert shells and shells[-1] == ROW["nodes"], where
    elif action == "toggle_maximize":
        assert app.screen.maximized is app.pane(kind), where
    elif action in ("command_mode", "filter_mode"):
        assert app.focused is app._cmdline and app._cmdline.has_class("open"), where
    elif action == "toggle_mark":
        assert app.pane(kind).table.marks, where
    elif action == "quit":
        return  # leaving is tested by the command tests; here it would end the run
    else:
        pytest.fail(f"the footer shows {where}: add what it should do to this test")
    await pilot.pause()
    assert app.is_running and app._exception is None, where


@pytest.mark.parametrize("kind", ["machines", "nodes", "jobs", "distributors", "events"])
async def test_every_shown_key_works_on_every_pane(seeded_engine, kind):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    shells: list[str] = []
    app.shell_runner = lambda node: shells.append(node) or 0
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await focus_row(pilot, kind)
        keys = shown_keys(app)
        assert keys, f"the footer shows nothing on the {kind} pane"
        for key, action in keys.items():
            if action == "quit":
                continue
            await focus_row(pilot, kind)
            await check_key(pilot, kind, key, action, shells)
            await back_to_dashboard(pilot)
