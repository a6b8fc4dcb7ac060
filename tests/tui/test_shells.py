"""Node shells in the console, against the demo (no root): its simulated
nodes are asyncssh servers behind the demo's jump, with a PTY shell (prompt,
line editing, `hostname`, `stty size`, `top`, `exit N`).

`s` opens a tab, typing reaches the node, the window size follows the widget,
the exit status shows, the session is recorded; `B` broadcasts to the marked
nodes; read-only refuses both; f12's handoff bridges a real pty to the same
channel until ctrl+]."""

from __future__ import annotations

import asyncio
import json
import os
import termios
import time
from pathlib import Path

import pytest

from fleet.access.shell import hand_terminal
from fleet.tui.app import FleetApp
from support.profiles import use_isolated_env
from tui.conftest import ready
from tui.conftest import settle as _settle

SIZE = (120, 36)
NAMES = ("alpha", "bravo")


@pytest.fixture
async def demo_engine(tmp_path, monkeypatch):
    """A demo site with two installed nodes (alpha, bravo) whose sshd runs."""
    from fleet.engine import Engine
    from fleet.sim.api import start_demo
    from fleet.sim.profiles import free_ports, write_demo_profile

    use_isolated_env(monkeypatch, tmp_path)
    path = write_demo_profile(tmp_path, machines=2, install_seconds=0.5, ports=free_ports(),
                              subnet_octet=187, options={"stagger_seconds": 0.1,
                                                         "ipxe_size": 2048,
                                                         "retry_seconds": 0.5})
    engine = await Engine.open(path)
    try:
        demo = await start_demo(engine)
        deadline = time.monotonic() + 30
        while True:
            machines = await engine.machines()
            if len(machines) == 2 and all(m.stage == "ipxe" for m in machines):
                break
            assert time.monotonic() < deadline, "demo machines not discovered"
            await asyncio.sleep(0.1)
        for name, m in zip(NAMES, machines):
            await engine.lease(m.mac, "debian12", hostname=name)
        while not (len(await engine.nodes()) == 2 and all(
                m.node is not None and m.node.running for m in demo.machines)):
            assert time.monotonic() < deadline, "demo nodes not up"
            await asyncio.sleep(0.1)
        yield engine
    finally:
        await engine.close()


async def settle(pilot, predicate, tries: int = 500) -> bool:
    """Up to 10 s by default: SSH round trips on a busy machine."""
    return await _settle(pilot, predicate, max(tries, 500))


def app_for(engine, **kw) -> FleetApp:
    return FleetApp(engine.profile, engine=engine, blink=False, **kw)


async def open_dashboard(pilot) -> None:
    app = pilot.app
    await ready(pilot)
    nodes = app.pane("nodes").table
    assert await settle(pilot, lambda: set(NAMES) <= set(nodes.rows))


async def goto_node(pilot, name: str) -> None:
    table = pilot.app.pane("nodes").table
    table.focus()
    assert table.move_cursor_to(name)
    await pilot.pause()


def screen_text(tab) -> str:
    return "\n".join(tab.terminal.screen_lines())


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["enter" if c == "\r" else "space" if c == " " else c for c in text])


async def test_a_resize_while_connecting_reaches_the_pty(demo_engine, monkeypatch):
    """The console is resized while the shell's connection is still being made
    (a slow jump): the PTY gets the widget's new size once the session is up, not
    the size the widget had when the tab opened (CI once showed 24x80 here)."""
    import contextlib

    real_shell = demo_engine.access.shell
    connecting = asyncio.Event()
    go_on = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow_shell(*args, **kw):
        connecting.set()
        await go_on.wait()  # the connection takes its time
        async with real_shell(*args, **kw) as session:
            yield session

    monkeypatch.setattr(demo_engine.access, "shell", slow_shell)
    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        await goto_node(pilot, "alpha")
        await pilot.press("s")
        assert await settle(pilot, lambda: connecting.is_set())
        (tab,) = app.shells.tabs.values()
        await pilot.resize_terminal(110, 33)
        assert await settle(pilot, lambda: tab.terminal.cols == 110)
        go_on.set()
        assert await settle(pilot, lambda: "root@alpha:~#" in screen_text(tab), 400)
        await type_text(pilot, "stty size\r")
        rows, cols = tab.terminal.rows, tab.terminal.cols
        assert (rows, cols) == (33 - 5, 110)
        assert await settle(pilot, lambda: f"{rows} {cols}" in screen_text(tab)), \
            screen_text(tab)


async def test_shell_tab_types_resizes_exits_and_records(demo_engine, tmp_path):
    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        await goto_node(pilot, "alpha")
        await pilot.press("s")
        assert await settle(pilot, lambda: len(app.shells.tabs) == 1)
        (tab,) = app.shells.tabs.values()
        assert app.query_one("#tabs").active == tab.tab_id
        assert app.focused is tab.terminal
        assert await settle(pilot, lambda: "root@alpha:~#" in screen_text(tab), 400)
        await type_text(pilot, "hostname\r")
        assert await settle(pilot, lambda: "\nalpha" in screen_text(tab))
        # the PTY has the widget's size (the tab minus its status line) ...
        cols, rows = tab.terminal.cols, tab.terminal.rows
        assert (cols, rows) == (SIZE[0], SIZE[1] - 5)  # header, tabs (2), status, footer
        await type_text(pilot, "stty size\r")
        assert await settle(pilot, lambda: f"{rows} {cols}" in screen_text(tab))
        # ... and follows it
        await pilot.resize_terminal(100, 30)
        assert await settle(pilot, lambda: tab.terminal.cols == 100)
        await type_text(pilot, "stty size\r")
        assert await settle(pilot, lambda: "25 100" in screen_text(tab))
        # keys the terminal does not take: dashboard and back
        await pilot.press("ctrl+right_square_bracket")
        assert app.query_one("#tabs").active == "tab-dashboard"
        await pilot.press("ctrl+pagedown")
        assert app.query_one("#tabs").active == tab.tab_id and app.focused is tab.terminal
        await type_text(pilot, "exit 3\r")
        assert await settle(pilot, lambda: not tab.running, 300)
        assert tab.exit_status == 3
        assert "exited with status 3" in str(tab.status.render())
        assert "[alpha: exited with status 3; enter closes this tab]" in screen_text(tab)
        await pilot.press("enter")
        assert await settle(pilot, lambda: not app.shells.tabs)
        assert app.query_one("#tabs").active == "tab-dashboard"
    casts = sorted(Path(os.environ["XDG_STATE_HOME"]).rglob("alpha-*.cast"))
    assert len(casts) == 1
    lines = casts[0].read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (cols, rows)
    events = [json.loads(line) for line in lines[1:]]
    assert {e[1] for e in events} <= {"o", "r"}  # output and resizes, never input
    assert ["r", "100x25"] in [e[1:] for e in events]
    out = "".join(e[2] for e in events if e[1] == "o")
    assert "root@alpha:~#" in out and "25 100" in out
    closed = [e for e in await demo_engine.events(200) if e.kind == "shell.closed"]
    assert closed and closed[0].data["exit_status"] == 3


async def test_broadcast_writes_to_every_marked_node(demo_engine):
    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        for name in NAMES:
            await goto_node(pilot, name)
            await pilot.press("space")
        assert app.pane("nodes").table.marks == set(NAMES)
        await pilot.press("B")
        assert await settle(pilot, lambda: len(app.shells.tabs) == 2)
        tabs = {t.node: t for t in app.shells.tabs.values()}
        assert app.shells.broadcast == [tabs["alpha"], tabs["bravo"]]
        for t in tabs.values():
            assert await settle(pilot, lambda: f"root@{t.node}:~#" in screen_text(t), 400)
            assert "BROADCAST to 2" in str(t.status.render())
            assert str(app.query_one("#tabs").get_tab(t.tab_id).label).startswith("⇉")
        assert app.focused is tabs["alpha"].terminal
        await type_text(pilot, "hostname\r")
        for t in tabs.values():  # each shell answers with its own name
            assert await settle(pilot, lambda: f"\n{t.node}" in screen_text(t))
        await pilot.press("f11")  # stop: typing goes to this tab only
        assert app.shells.broadcast is None
        assert "BROADCAST" not in str(tabs["alpha"].status.render())
        await type_text(pilot, "echo solo\r")
        assert await settle(pilot, lambda: "\nsolo" in screen_text(tabs["alpha"]))
        await pilot.pause(0.3)
        assert "solo" not in screen_text(tabs["bravo"])
        # B again reuses the running tabs
        await pilot.press("ctrl+right_square_bracket")
        app.pane("nodes").table.focus()
        await pilot.press("B")
        assert await settle(pilot, lambda: app.shells.broadcast is not None)
        assert len(app.shells.tabs) == 2


async def test_read_only_refuses_shells_and_broadcast(seeded_engine):
    """The seeded store (no demo), opened read-only."""
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await goto_node(pilot, "web1")
        await pilot.press("space", "s", "B")
        await pilot.pause()
        assert not app.shells.tabs
        messages = [n.message for n in app._notifications]
        assert any("read-only: cannot open shells" in m for m in messages)
        assert any("read-only: cannot broadcast" in m for m in messages)


async def test_unreachable_node_is_a_notification(demo_engine):
    for m in demo_engine.demo.machines:
        if m.node.os.hostname == "bravo":
            await m.node.stop()  # its sshd is gone (before anything connected to it)
    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        await goto_node(pilot, "bravo")
        await pilot.press("s")
        ok = await settle(pilot, lambda: app.shells.tabs and not next(
            iter(app.shells.tabs.values())).running, 500)
        (tab,) = app.shells.tabs.values()
        assert ok, (screen_text(tab), str(tab.status.render()))
        assert tab.error and "bravo" in str(tab.status.render())
        assert any(n.severity == "error" and "shell bravo" in n.message
                   for n in app._notifications)


async def test_full_terminal_handoff_bridges_a_real_pty_to_the_same_channel(demo_engine):
    """f12 with the handoff pointed at a pty instead of the suspended console."""
    master, slave = os.openpty()
    seen: list[bytes] = []

    async def handoff(tab):
        before = termios.tcgetattr(slave)
        import fcntl
        import struct
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))
        task = asyncio.ensure_future(hand_terminal(
            tab.session, tab.relay, tab.done, in_fd=slave, out_fd=slave,
            prelude=tab.terminal.ansi_snapshot()))
        loop = asyncio.get_running_loop()
        out = b""

        async def expect(what: bytes):
            nonlocal out
            deadline = loop.time() + 15
            while what not in out:
                assert loop.time() < deadline, (what, out[-500:])
                await asyncio.sleep(0.02)
                try:
                    out += os.read(master, 65536)
                except BlockingIOError:
                    pass

        os.set_blocking(master, False)
        await expect(b"root@alpha:~#")  # the prelude: the widget's screen
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # raw meanwhile
        os.write(master, b"stty size\r")
        await expect(b"20 70")  # the real terminal's size, on the same channel
        os.write(master, b"hostname\x1dignored")  # ctrl+] detaches
        detached = await task
        seen.append(out)
        assert termios.tcgetattr(slave) == before  # restored
        return detached

    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        app.shells.handoff = handoff
        await goto_node(pilot, "alpha")
        await pilot.press("s")
        tab = await _first_tab(pilot)
        assert await settle(pilot, lambda: "root@alpha:~#" in screen_text(tab), 400)
        await pilot.press("f12")
        assert await settle(pilot, lambda: seen, 600)
        # the widget followed along; `hostname` was typed before ctrl+], so it
        # reached the shell (not yet run: no enter); the rest was not sent
        await type_text(pilot, "\r")
        assert await settle(pilot, lambda: "\nalpha" in screen_text(tab))
        assert "20 70" in screen_text(tab) and "ignored" not in screen_text(tab)
        await type_text(pilot, "stty size\r")  # the widget's size again
        rows, cols = tab.terminal.rows, tab.terminal.cols
        assert await settle(pilot, lambda: f"{rows} {cols}" in screen_text(tab), 500), \
            screen_text(tab)
        assert app.focused is tab.terminal
    os.close(master)
    os.close(slave)


async def _first_tab(pilot):
    app = pilot.app
    assert await settle(pilot, lambda: len(app.shells.tabs) == 1)
    return next(iter(app.shells.tabs.values()))


async def test_hand_terminal_until_the_shell_ends(demo_engine):
    """The bridge alone (no console): a real pty as the user's terminal, a
    window change (SIGWINCH) reaches the remote, the shell exits while handed
    over -> False, status kept, terminal restored, the previous sink saw the
    output too and the size is given back."""
    from fleet.access.shell import Relay

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    widget_side: list[bytes] = []
    relay = Relay(widget_side.append)
    try:
        async with demo_engine.access.shell("bravo", term_size=(80, 24)) as session:
            run = asyncio.ensure_future(session.run(relay.read, relay.write))
            deadline = time.monotonic() + 15
            while b"root@bravo:~#" not in b"".join(widget_side):
                assert time.monotonic() < deadline, widget_side
                await asyncio.sleep(0.02)
            handed = asyncio.ensure_future(hand_terminal(session, relay, run, in_fd=slave,
                                                         out_fd=slave))
            os.set_blocking(master, False)
            os.write(master, b"hostname\r")
            out = b""
            while b"\nbravo" not in out:
                assert time.monotonic() < deadline, out
                await asyncio.sleep(0.02)
                try:
                    out += os.read(master, 65536)
                except BlockingIOError:
                    pass
            # the window changes while handed over: SIGWINCH -> the remote's size
            import fcntl
            import signal
            import struct
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
            os.kill(os.getpid(), signal.SIGWINCH)
            await asyncio.sleep(0.3)
            os.write(master, b"stty size\r")
            while b"30 90" not in out:
                assert time.monotonic() < deadline, out
                await asyncio.sleep(0.02)
                try:
                    out += os.read(master, 65536)
                except BlockingIOError:
                    pass
            os.write(master, b"exit 5\r")
            assert await asyncio.wait_for(handed, 15) is False  # ended, not detached
            assert await run == 5
        assert termios.tcgetattr(slave) == before
        assert b"\nbravo" in b"".join(widget_side)
        assert relay.sink == widget_side.append  # given back
        assert session.term_size == (80, 24)
    finally:
        os.close(master)
        os.close(slave)


async def test_quit_with_open_shells_asks_first(demo_engine):
    """ctrl+q in a shell tab (an ordinary key in emacs) does not drop live shells
    without a dialog naming them; cancel keeps everything, confirm quits."""
    from fleet.tui.screens.confirm import ConfirmDialog

    app = app_for(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot)
        await goto_node(pilot, "alpha")
        await pilot.press("s")
        tab = await _first_tab(pilot)
        assert await settle(pilot, lambda: "root@alpha:~#" in screen_text(tab), 400)
        await pilot.press("ctrl+q")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "alpha" in str(app.screen.query_one("#targets").render())
        await pilot.press("escape")
        assert await settle(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        assert app.is_running and tab.running
        await pilot.press("ctrl+q")
        assert await settle(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#confirm")
        assert await settle(pilot, lambda: not app.is_running)
