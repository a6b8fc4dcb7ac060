"""The console over a remote site: its machines beside the local ones with their
site, leased through the held agent channel (a real sshd, a jump, the agent
process), the Sites view; then the site goes away: the view says since when and
why, its rows are drawn stale, and a lease is refused with the dated reason; and
it comes back: the console reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import subprocess
import time

import pytest

from fleet.engine import Engine
from fleet.profile import load_profile
from fleet.tui.app import FleetApp
from fleet.tui.screens.details import DetailsScreen
from fleet.tui.screens.lease import LeaseDialog
from support.agent_sshd import MAC, OTHER_MAC, sites, sshd, stop_sshd  # noqa: F401 - fixtures
from tui.conftest import settle

pytestmark = pytest.mark.root

SIZE = (160, 50)
AWAY = re.compile(r"^since \d\d:\d\d:\d\d: ")


async def wait_for(pilot, what: str, check, timeout: float = 20.0) -> None:
    if not await settle(pilot, check, tries=int(timeout / 0.02)):
        app = pilot.app
        raise AssertionError(f"timed out waiting for {what}; sites: {app.site_records}; "
                             f"notices: {[n.message for n in app._notifications]}")


async def lease_from_the_form(pilot, mac: str) -> LeaseDialog:
    app = pilot.app
    app.action_focus_pane("machines")
    await pilot.pause()
    assert app.pane("machines").table.move_cursor_to(mac)
    await pilot.press("l")
    await wait_for(pilot, "the lease form",
                   lambda: isinstance(app.screen, LeaseDialog) and app.screen.query("#deployment"))
    dialog = app.screen
    await pilot.press("enter")  # the first deployment, preselected
    return dialog


def cut_off(sites) -> None:
    """Stop the sshd and end the sessions it had opened (by their pids)."""
    listener = (sites["folder"] / "pid").read_text().strip()
    sessions = subprocess.run(["ps", "-o", "pid=", "--ppid", listener], capture_output=True,
                              text=True).stdout.split()
    assert sessions, "no open session to the site"
    stop_sshd(sites["folder"], sites["port"])
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)


def error_of(dialog: LeaseDialog) -> str:
    found = dialog.query("#error")
    return str(found.first().render()) if found else ""


async def test_the_console_over_a_remote_site_then_the_site_away(sites):
    loop = asyncio.get_running_loop()
    unhandled: list[str] = []  # e.g. a lost channel's "exception was never retrieved"
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context["message"]))
    await console_over_a_remote_site(sites)
    gc.collect()  # what the console left behind: its replies, tasks, channels
    assert unhandled == []


async def console_over_a_remote_site(sites) -> None:
    app = FleetApp(load_profile(sites["console"]), blink=False)
    async with app.run_test(size=SIZE) as pilot:
        machines, sites_pane = app.pane("machines"), app.pane("sites")
        table = machines.table
        await wait_for(pilot, "rack2's machines",
                       lambda: MAC in table.rows and OTHER_MAC in table.rows)
        rows = table.rows
        assert rows[MAC].fields["site"] == "rack2" and rows[MAC].values[1] == "rack2"
        assert [c.key for c in machines.table.columns][1] == "site"
        await wait_for(pilot, "rack2 connected",
                       lambda: sites_pane.records.get("rack2", {}).get("connected"))

        # the Sites view (6, on the dashboard: a site is remote): one row per site,
        # rack2 connected through the jump
        assert sites_pane.display and sites_pane.region.area
        await pilot.press("6")
        await pilot.pause()
        assert app.current_pane() is sites_pane
        rack2 = sites_pane.table.rows["rack2"]
        assert rack2.values[:3] == ("rack2", f"root@127.0.0.1:{sites['port']} via gw",
                                    "connected")
        assert rack2.values[4] == 0 and rack2.values[6] is None  # no lag, no reason
        assert sites_pane.table.rows["rack1"].values[1:3] == ("local", "local")

        # lease through the held channel: the row shows it at once, the site's own
        # store has it, and the site's event arrives in the events pane, once
        await lease_from_the_form(pilot, MAC)
        await wait_for(pilot, "the lease", lambda: not isinstance(app.screen, LeaseDialog), 10)
        rows = table.rows
        assert rows[MAC].fields["state"] == "leased"
        async with await Engine.open(sites["remote"], read_only=True) as at_site:
            assert (await at_site.machine(MAC)).state.value == "leased"
        events = app.pane("events")
        leased = lambda: [k for k, e in events.events.items()  # noqa: E731
                          if e.kind == "machine.leased" and e.subject == MAC]
        await wait_for(pilot, "rack2's machine.leased event", leased, 10)
        await pilot.pause(1.0)
        assert len(leased()) == 1 and str(leased()[0]).startswith("rack2:")
        assert events.table.rows[leased()[0]].values[1] == "rack2"  # the Site column

        # the remote rows follow the replica within half a second: release at the
        # site itself (not through this console), then time the replica and the row
        async with await Engine.open(sites["remote"]) as at_site:
            await at_site.release(MAC)
        hub = app.engine.remote
        store = (await hub.replica()).store
        replica_at = pane_at = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pane_at is None:
            if replica_at is None:
                row = [m for m in await store.machines("rack2") if m["mac"] == MAC][0]
                if row["state"] != "leased":
                    replica_at = time.monotonic()
            if table.rows[MAC].fields["state"] != "leased":
                pane_at = time.monotonic()
            await pilot.pause(0.02)
        assert replica_at is not None and pane_at is not None
        assert pane_at - replica_at < 0.5, pane_at - replica_at

        # the site goes away: no new sessions, and the open one (the pooled
        # connection the agent channel rides on) ends, and its agent with it
        cut_off(sites)
        await wait_for(pilot, "rack2 away",
                       lambda: sites_pane.records["rack2"]["connected"] is False)
        rack2, rows = sites_pane.table.rows["rack2"], table.rows
        assert rack2.values[2] == "away" and rack2.fields["state"] == "away"
        assert AWAY.match(rack2.values[6]), rack2.values[6]
        assert machines.is_stale(rows[MAC]) and machines.is_stale(rows[OTHER_MAC])
        assert machines.table.row_style(rows[MAC]) == "stale"
        assert re.search(r"rack2 away since \d\d:\d\d:\d\d \(last heard \d\d:\d\d:\d\d\)",
                         str(machines.border_subtitle)), machines.border_subtitle

        # its details (enter on the Sites view): the whole reason, dated
        await pilot.press("6")
        assert sites_pane.table.move_cursor_to("rack2")
        await pilot.press("enter")
        await wait_for(pilot, "the site's details", lambda: isinstance(app.screen, DetailsScreen))
        details = app.screen.record
        assert details["connected"] is False and details["where"] == rack2.values[1]
        assert re.match(r"site rack2 unreachable via gw since \d\d:\d\d:\d\d: ",
                        details["reason"]), details
        await pilot.press("escape")
        await wait_for(pilot, "the dashboard", lambda: not isinstance(app.screen, DetailsScreen))

        # a lease for the away site: refused at once, the dated reason in the form
        began = time.monotonic()
        dialog = await lease_from_the_form(pilot, OTHER_MAC)
        await wait_for(pilot, "the refusal", lambda: error_of(dialog), 5)
        assert time.monotonic() - began < 2.0
        assert re.match(r"site rack2 unreachable via gw since \d\d:\d\d:\d\d: ",
                        error_of(dialog)), error_of(dialog)
        assert isinstance(app.screen, LeaseDialog)
        await pilot.press("escape")

        # the site comes back: the console's held channel reconnects by itself, the
        # rows are fresh again and the lease goes through
        back = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(sites["folder"] / "conf"),
                                 "-E", str(sites["folder"] / "log")])
        try:
            await wait_for(pilot, "rack2 connected again",
                           lambda: sites_pane.records["rack2"]["connected"], 40)
            assert not machines.is_stale(table.rows[OTHER_MAC])
            assert machines.stale_note == ""
            await lease_from_the_form(pilot, OTHER_MAC)
            await wait_for(pilot, "the lease", lambda: not isinstance(app.screen, LeaseDialog),
                           10)
            assert table.rows[OTHER_MAC].fields["state"] == "leased"
        finally:
            back.terminate()
            back.wait(10)
