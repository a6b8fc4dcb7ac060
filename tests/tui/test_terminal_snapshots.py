"""Snapshots of the terminal widget showing known output: recorded vim and top
screens (fixtures/record.py), colours, reverse video, bold and the cursor.
Update with `pytest tests/tui/test_terminal_snapshots.py --snapshot-update`
after looking at the report."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult

from fleet.tui.widgets.terminal import Terminal

FIXTURES = Path(__file__).parent / "fixtures"


class Screen80x24(App):
    def __init__(self, *recordings: str):
        super().__init__()
        self.recordings = recordings

    def compose(self) -> ComposeResult:
        yield Terminal()

    def on_mount(self) -> None:
        term = self.query_one(Terminal)
        term.feed(b"op@console:~$ vim sample.py\r\n")
        for name in self.recordings:
            term.feed((FIXTURES / name).read_bytes())
        term.focus()


def test_vim_in_the_terminal_widget(snap_compare):
    assert snap_compare(Screen80x24("vim.0.bin"), terminal_size=(80, 24))


def test_top_in_the_terminal_widget(snap_compare):
    assert snap_compare(Screen80x24("top.0.bin"), terminal_size=(80, 24))


def test_shell_tab_on_a_demo_node(snap_compare, tmp_path, monkeypatch):
    """The console with a shell tab open on a demo node after `hostname`."""
    import asyncio

    from fleet.profile import load_profile
    from fleet.sim.profiles import free_ports, write_demo_profile
    from fleet.tui.app import FleetApp
    from support.profiles import use_isolated_env
    from tui.conftest import ready, settle

    use_isolated_env(monkeypatch, tmp_path)
    path = write_demo_profile(tmp_path, machines=1, install_seconds=0.5, ports=free_ports(),
                              subnet_octet=189, options={"stagger_seconds": 0.1,
                                                         "ipxe_size": 2048,
                                                         "retry_seconds": 0.5})

    async def run_before(pilot):
        app = pilot.app
        await ready(pilot)
        assert await settle(pilot, lambda: app.demo is not None, 500)
        for _ in range(500):
            machines = await app.engine.machines()
            if machines and machines[0].stage == "ipxe":
                break
            await asyncio.sleep(0.02)
        await app.engine.lease(machines[0].mac, "debian12", hostname="alpha")
        sim = app.demo.machines[0]
        assert await settle(pilot, lambda: sim.node is not None and sim.node.running, 1000)
        nodes = app.pane("nodes").table
        assert await settle(pilot, lambda: "alpha" in nodes.rows, 500)
        nodes.focus()
        nodes.move_cursor_to("alpha")
        await pilot.press("s")
        assert await settle(pilot, lambda: len(app.shells.tabs) == 1)
        (tab,) = app.shells.tabs.values()
        assert await settle(pilot, lambda: "root@alpha:~#" in "\n".join(
            tab.terminal.screen_lines()), 500)
        await pilot.press(*"hostname", "enter")
        assert await settle(pilot, lambda: "\nalpha" in "\n".join(
            tab.terminal.screen_lines()), 500)
        await ready(pilot, app.refresh_count + 1)
        await pilot.pause(0.5)

    app = FleetApp(load_profile(path), blink=False)
    assert snap_compare(app, terminal_size=(100, 24), run_before=run_before)
