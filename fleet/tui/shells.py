"""Node shells as tabs beside the dashboard, broadcast typing, and the
full-terminal handoff.

- `s` on a node: a `ShellTab` titled with the node's name: a `Terminal`
  widget over `engine.access.shell(...)` (a PTY on the node's pooled
  connection, recorded as asciicast v2 with shell.opened/closed events). The
  widget's size is the PTY's, followed on resize. When the shell ends the tab
  says with which status; enter (or q, x) closes it.
- `B` on the nodes pane: a tab per marked node (running ones reused) and
  broadcast mode: whatever is typed into any of them is written to every one
  of their channels, the same bytes once per channel. The tab titles carry
  `⇉` and each status line says BROADCAST; `B` on the nodes pane or f11 stops.
  The emulator's own answers (cursor position reports) go only to the channel
  that asked.
- f12 in a shell tab: the full-terminal handoff: the console is suspended and
  the real terminal bridged to the *same* channel (`hand_terminal`) until
  ctrl+] ; the widget keeps receiving the output meanwhile. `Shells.handoff`
  is replaceable (Textual cannot suspend under `run_test`).
- ctrl+pageup / ctrl+pagedown cycle the tabs (dashboard included), ctrl+]
  goes back to the dashboard: app-level priority bindings, so the terminal
  never swallows them (ids in keymap.py, remappable, listed by `?`).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static, TabbedContent

from fleet.access.shell import Relay, hand_terminal
from fleet.tui.widgets.terminal import Terminal

CHUNK = 4096  # bytes parsed per turn of the loop: the console stays responsive
DASHBOARD = "tab-dashboard"
SHELL_ACTIONS = {"next_tab", "prev_tab", "dashboard", "handoff", "stop_broadcast"}


class ShellTab(Vertical):
    """One node's shell: a status line and the terminal (see the module docstring)."""

    DEFAULT_CSS = """
    ShellTab { height: 1fr; }
    ShellTab > .status { height: 1; padding: 0 1; background: $panel; color: $foreground; }
    ShellTab > .status.broadcast { background: $warning 40%; text-style: bold; }
    ShellTab > .status.ended { background: $error 30%; }
    """
    BINDINGS = [Binding("enter,q,x", "close", "Close tab", id="shell.close")]

    def __init__(self, shells: "Shells", node: str, tab_id: str):
        super().__init__()
        self.shells = shells
        self.node = node
        self.tab_id = tab_id
        self.session = None
        self.exit_status: int | None = None
        self.error: str | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.relay = Relay(self._output)
        self.status = Static("", classes="status", markup=False)
        self.terminal = Terminal(send=self._typed, reply=self.relay.send,
                                 resized=self._resized)

    @property
    def running(self) -> bool:
        return not self.done.done()

    def compose(self) -> ComposeResult:
        yield self.status
        yield self.terminal

    def on_mount(self) -> None:
        self.update_status()
        self.call_after_refresh(lambda: self.run_worker(self._run(), group="shell",
                                                        exit_on_error=False))

    # -- the session -------------------------------------------------------------------

    async def _run(self) -> None:
        term = self.terminal
        access = self.shells.app.engine.access
        try:
            async with access.shell(self.node, term_type="xterm-256color",
                                    term_size=(term.cols, term.rows)) as session:
                self.session = session
                # a resize while connecting found no session to tell: tell it now
                session.resize(term.cols, term.rows)
                self.update_status()
                self.exit_status = await session.run(self.relay.read, self.relay.write)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # unreachable, host key, auth: a notification
            self.error = str(err) or type(err).__name__
            self.shells.app.notify(f"shell {self.node}: {self.error}", severity="error",
                                   timeout=10)
        finally:
            if not self.done.done():
                self.done.set_result(self.exit_status)
        self._ended()

    async def _output(self, data: bytes) -> None:
        feed = self.terminal.feed
        if len(data) <= CHUNK:
            feed(data)
            return
        for i in range(0, len(data), CHUNK):
            feed(data[i:i + CHUNK])
            await asyncio.sleep(0)

    def _typed(self, data: bytes) -> None:
        self.shells.type_into(self, data)

    def _resized(self, cols: int, rows: int) -> None:
        if self.session is not None and self.running:
            self.session.resize(cols, rows)

    def _ended(self) -> None:
        term = self.terminal
        term.accepting = False
        what = (f"exited with status {self.exit_status}" if self.error is None
                else f"failed: {self.error}")
        term.feed(f"\r\n\x1b[0;7m[{self.node}: {what}; enter closes this tab]\x1b[0m"
                  .encode())
        self.shells.ended(self)
        self.update_status()
        self.refresh_bindings()  # the terminal stays focused: keys now bubble to close

    # -- looks ---------------------------------------------------------------------------

    def update_status(self) -> None:
        parts = [self.node]
        if self.error is not None:
            parts.append(f"failed: {self.error}")
        elif not self.running:
            parts.append(f"exited with status {self.exit_status} · enter closes")
        elif self.session is None:
            parts.append("connecting…")
        else:
            if self.session.link is not None and self.session.link.via:
                parts.append(f"via {self.session.link.via}")
            if self.session.recording is not None:  # where: the shell.opened event
                parts.append("● recorded")
            parts.append("f12 full terminal (ctrl+] returns) · ctrl+] dashboard · "
                         "ctrl+pgup/pgdn tabs")
        group = self.shells.broadcast
        on_air = group is not None and self in group and self.running
        if on_air:
            names = ", ".join(t.node for t in group)
            parts.insert(0, f"BROADCAST to {len(group)}: {names} (f11 or B stops)")
        self.status.update("  ·  ".join(parts))
        self.status.set_class(on_air, "broadcast")
        self.status.set_class(not self.running, "ended")

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "close":
            return not self.running  # (hidden from the footer while the shell runs)
        return True

    def action_close(self) -> None:
        if not self.running:
            # the app's worker: one of this tab's own would wait for its removal
            self.shells.app.run_worker(self.shells.close(self), group="close",
                                       exit_on_error=False)


class Shells:
    """The console's shell tabs and broadcast (one per app)."""

    def __init__(self, app):
        self.app = app
        self.tabs: dict[str, ShellTab] = {}
        self.broadcast: list[ShellTab] | None = None
        self._count = 0
        #: (tab) -> awaitable of "detached" (True) or "the shell ended" (False);
        #: the default suspends the app (tests pass their own pty)
        self.handoff: Callable[[ShellTab], Awaitable[bool]] = self._suspend_and_hand

    @property
    def tabbed(self) -> TabbedContent:
        return self.app.screen_stack[0].query_one("#tabs", TabbedContent)

    def active(self) -> ShellTab | None:
        if not self.tabs:
            return None
        active = self.tabbed.active
        return next((t for t in self.tabs.values() if t.tab_id == active), None)

    async def open(self, node: str, *, reuse: bool = False, focus: bool = True) -> ShellTab:
        if reuse:
            for tab in self.tabs.values():
                if tab.node == node and tab.running:
                    if focus:
                        self.show(tab)
                    return tab
        self._count += 1
        tab_id = f"shell-{re.sub(r'[^A-Za-z0-9_-]', '_', node)}-{self._count}"
        tab = ShellTab(self, node, tab_id)
        self.tabs[tab_id] = tab
        same = sum(1 for t in self.tabs.values() if t.node == node)
        await self.app.add_tab(node if same == 1 else f"{node} ({same})", tab, tab_id)
        if focus:
            self.show(tab)
        else:
            self.tabbed.active = DASHBOARD
        return tab

    def show(self, tab: ShellTab) -> None:
        self.tabbed.active = tab.tab_id
        tab.terminal.focus()

    async def close(self, tab: ShellTab) -> None:
        self.tabs.pop(tab.tab_id, None)
        if self.broadcast and tab in self.broadcast:
            self.broadcast.remove(tab)
        await self.tabbed.remove_pane(tab.tab_id)
        self.go_dashboard()

    def go_dashboard(self) -> None:
        self.tabbed.active = DASHBOARD
        self.app.current_pane().table.focus()

    def cycle(self, step: int) -> None:
        ids = [DASHBOARD] + [t.tab_id for t in self.tabs.values()]
        current = self.tabbed.active
        at = ids.index(current) if current in ids else 0
        target = ids[(at + step) % len(ids)]
        if target == DASHBOARD:
            self.go_dashboard()
        else:
            self.show(self.tabs[target])

    # -- typing and broadcast -------------------------------------------------------------

    def type_into(self, tab: ShellTab, data: bytes) -> None:
        group = self.broadcast
        if group and tab in group:
            for each in group:  # the same bytes, one write per channel
                if each.running:
                    each.relay.send(data)
        else:
            tab.relay.send(data)

    async def start_broadcast(self, nodes: list[str]) -> list[ShellTab]:
        tabs = []
        for node in nodes:
            tabs.append(await self.open(node, reuse=True, focus=False))
        self.broadcast = tabs
        self._relabel()
        self.show(tabs[0])
        return tabs

    def stop_broadcast(self) -> None:
        self.broadcast = None
        self._relabel()

    def ended(self, tab: ShellTab) -> None:
        if self.broadcast and tab in self.broadcast and not any(
                t.running for t in self.broadcast):
            self.stop_broadcast()
        self._relabel()

    def _relabel(self) -> None:
        self.app.refresh_bindings()
        group = self.broadcast or []
        for tab in self.tabs.values():
            tab.update_status()
            try:
                label = self.tabbed.get_tab(tab.tab_id)
            except Exception:  # not mounted yet / gone
                continue
            base = re.sub(r"^⇉ ", "", str(label.label))
            label.label = ("⇉ " + base) if tab in group else base

    # -- the full-terminal handoff ------------------------------------------------------

    async def hand_over(self, tab: ShellTab) -> None:
        if tab.session is None or not tab.running:
            self.app.notify(f"shell {tab.node} is not running", severity="warning")
            return
        try:
            detached = await self.handoff(tab)
        except Exception as err:  # SuspendNotSupported (no real terminal), OSError
            self.app.notify(f"full terminal: {err or type(err).__name__}", severity="error")
            return
        self.app.refresh(layout=True)
        tab.terminal.refresh()
        if detached and tab.running:
            tab.terminal.focus()
            self.app.notify(f"back from the full terminal on {tab.node}", timeout=3)

    async def _suspend_and_hand(self, tab: ShellTab) -> bool:
        out = sys.__stdout__ if sys.__stdout__.isatty() else sys.__stderr__
        with self.app.suspend():
            return await hand_terminal(tab.session, tab.relay, tab.done,
                                       in_fd=sys.__stdin__.fileno(), out_fd=out.fileno(),
                                       prelude=tab.terminal.ansi_snapshot())


class ShellActions:
    """The app's shell keys (mixed into FleetApp; bindings in keymap.py)."""

    @property
    def shells(self) -> Shells:
        shells = getattr(self, "_shells", None)
        if shells is None:
            shells = self._shells = Shells(self)
        return shells

    def check_shell_action(self, action: str) -> bool:
        tab = self.shells.active()
        on_tab = tab is not None
        if action == "handoff":
            return on_tab and tab.running
        if action == "stop_broadcast":
            return self.shells.broadcast is not None
        if action == "dashboard":
            return on_tab
        return bool(self.shells.tabs)  # next_tab, prev_tab

    async def open_shell_tab(self, node: str) -> None:
        await self.shells.open(node)

    async def action_quit(self) -> None:
        """Quit; with shells still running, only after a dialog naming them
        (`ctrl+q` is an ordinary key in emacs, easy to press in a shell tab)."""
        from fleet.tui.screens.confirm import ConfirmDialog

        running = [t.node for t in self.shells.tabs.values() if t.running]
        if not running:
            self.exit()
            return

        def done(answer: dict | None) -> None:
            if answer is not None:
                self.exit()
        plural = "s" if len(running) > 1 else ""
        self.push_screen(ConfirmDialog(f"Quit fleet and close {len(running)} open "
                                       f"shell{plural}?", running, action="Quit"), done)

    def action_next_tab(self) -> None:
        self.shells.cycle(1)

    def action_prev_tab(self) -> None:
        self.shells.cycle(-1)

    def action_dashboard(self) -> None:
        self.shells.go_dashboard()

    async def action_handoff(self) -> None:
        tab = self.shells.active()
        if tab is not None:
            await self.shells.hand_over(tab)

    def action_stop_broadcast(self) -> None:
        if self.shells.broadcast is not None:
            self.shells.stop_broadcast()
            self.notify("broadcast stopped")
