"""The console's in-app terminal against a real OpenSSH sshd (root: network
namespaces, a jump in front of the node): real `vim` and `less` on a file
draw in the widget, and quit back to the shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.engine import Engine
from fleet.tui.app import FleetApp
from support.fixtures import SshFleet
from support import profiles as support_profiles
from support.profiles import use_isolated_env
from tui.conftest import ready, settle

pytestmark = pytest.mark.root

SAMPLE = ["first line of the sample", "second line", "", "    indented fourth line"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    return use_isolated_env(monkeypatch, tmp_path)


def write_profile(tmp: Path, fleet: SshFleet, node) -> Path:
    return support_profiles.write_profile(tmp, "tb", "ssh_testbed", {
        "operator": {"ssh": {"identity": str(fleet.client_key),
                             "known_hosts": [str(fleet.known_hosts)], "connect_timeout": 5}},
        "nodes": [{"name": node.name, "address": node.address}]})


async def test_vim_and_less_run_in_the_console_terminal(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(SAMPLE) + "\n")
    pages = tmp_path / "pages.txt"
    pages.write_text("".join(f"page line {i:03d}\n" for i in range(1, 201)))
    engine = await Engine.open(write_profile(tmp_path, fleet, node))
    app = FleetApp(engine.profile, engine=engine, blink=False)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            table = app.pane("nodes").table
            assert await settle(pilot, lambda: node.name in table.rows)
            table.focus()
            table.move_cursor_to(node.name)
            await pilot.press("s")
            assert await settle(pilot, lambda: len(app.shells.tabs) == 1)
            (tab,) = app.shells.tabs.values()
            term = tab.terminal
            rows = term.screen_lines

            def shown(text: str) -> bool:
                return any(text in r for r in rows())

            assert await settle(pilot, lambda: shown("# "), 1000), rows()

            async def run(command: str) -> None:
                app.shells.type_into(tab, command.encode() + b"\r")

            await run(f"vim -u DEFAULTS -i NONE {sample}")
            assert await settle(pilot, lambda: term.vt.alternate and shown("sample.txt"), 1000)
            assert await settle(pilot, lambda: [r.rstrip() for r in rows()[:4]] == SAMPLE,
                                500), rows()
            assert rows()[4].startswith("~") and rows()[term.rows - 2].startswith("~")
            assert "4L" in rows()[-1]  # vim's file message: 4 lines
            await pilot.press("colon", "q", "enter")  # typed as keys, through the widget
            assert await settle(pilot, lambda: not term.vt.alternate, 500), rows()
            assert shown("vim -u DEFAULTS")  # the shell's screen is back

            await run(f"less {pages}")
            assert await settle(pilot, lambda: rows()[0].startswith("page line 001"), 500)
            assert term.vt.alternate
            await pilot.press("space")
            assert await settle(pilot, lambda: rows()[0].startswith(
                f"page line {term.rows:03d}"), 500), rows()
            await pilot.press("q")
            assert await settle(pilot, lambda: not term.vt.alternate, 500)

            await run("exit 4")
            assert await settle(pilot, lambda: not tab.running, 500)
            assert tab.exit_status == 4
    finally:
        await engine.close()
