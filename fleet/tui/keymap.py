"""The app-level key bindings, each with a stable id the user can remap in
`config.yaml` (`keymap: {verb.lease: ctrl+l}`) -> `App.set_keymap`.

Ids: `app.*` (global), `pane.*` (focus/maximize), `verb.*` (act on the selected
or marked rows: each pane binds its own, see fleet/tui/panes), `table.*`
(movement and marks inside a table, see LineTable), `tab.*` (dashboard and shell
tabs), `shell.*` (in a shell tab: f12 hands the real terminal to the shell until
ctrl+], f11 stops broadcasting).
"""

from __future__ import annotations

from textual.binding import Binding

APP_BINDINGS = [
    Binding("colon", "command_mode", ":cmd", id="app.command"),
    Binding("slash", "filter_mode", "/filter", id="app.filter"),
    Binding("question_mark", "help", "Help", id="app.help"),
    Binding("escape", "back", "Back", show=False, id="app.back"),
    Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    Binding("ctrl+r", "reload", "Reload", show=False, id="app.reload"),
    Binding("1", "focus_pane('machines')", "Machines", show=False, id="pane.machines"),
    Binding("2", "focus_pane('nodes')", "Nodes", show=False, id="pane.nodes"),
    Binding("3", "focus_pane('jobs')", "Jobs", show=False, id="pane.jobs"),
    Binding("4", "focus_pane('distributors')", "Distributors", show=False,
            id="pane.distributors"),
    Binding("5", "focus_pane('events')", "Events", show=False, id="pane.events"),
    Binding("6", "focus_pane('sites')", "Sites", show=False, id="pane.sites"),
    Binding("z", "toggle_maximize", "Zoom", id="pane.maximize"),
    # shell tabs (fleet/tui/shells.py): priority, so the terminal widget never
    # swallows them; each acts only where it means something (check_action)
    Binding("ctrl+pagedown", "next_tab", "Next tab", show=False, priority=True,
            id="tab.next"),
    Binding("ctrl+pageup", "prev_tab", "Previous tab", show=False, priority=True,
            id="tab.prev"),
    Binding("ctrl+right_square_bracket", "dashboard", "Dashboard", priority=True,
            id="tab.dashboard"),
    Binding("f12", "handoff", "Full terminal", priority=True, id="shell.handoff"),
    Binding("f11", "stop_broadcast", "Stop broadcast", priority=True,
            id="shell.stop_broadcast"),
]



def unavailable_bindings(panes) -> list[Binding]:
    """For each pane's own verbs, a hidden app binding with the same key and id (a
    user's keymap moves both): pressed where the verb is not available (another
    pane, read-only mode, no row) it runs `unavailable`, which says why."""
    out = []
    for pane in panes:
        for b in pane.__dict__.get("BINDINGS", ()):  # its own, not the common ones
            out.append(Binding(b.key, f"unavailable({pane.kind!r}, {b.action!r})",
                               b.description, show=False, id=b.id))
    return out


#: `:` command aliases -> canonical command.
ALIASES = {
    "machines": "machines", "machine": "machines", "ma": "machines", "m": "machines",
    "mac": "machines", "macs": "machines",
    "unleased": "unleased", "ul": "unleased",
    "nodes": "nodes", "node": "nodes", "no": "nodes", "n": "nodes",
    "jobs": "jobs", "job": "jobs", "j": "jobs", "builds": "jobs",
    "dist": "distributors", "distributors": "distributors", "distributor": "distributors",
    "d": "distributors",
    "events": "events", "event": "events", "ev": "events", "e": "events",
    "sites": "sites", "site": "sites", "si": "sites",
    "dash": "dash", "dashboard": "dash", "home": "dash",
    "theme": "theme", "skin": "theme",
    "help": "help", "h": "help",
    "q": "quit", "quit": "quit", "q!": "quit", "exit": "quit",
}


def command_words() -> list[str]:
    return sorted({":" + a for a in ALIASES})
