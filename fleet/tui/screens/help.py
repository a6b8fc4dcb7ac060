"""`?`: the key bindings in effect (after the user's keymap), by id."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

COMMANDS_HELP = """\
:machines [k=v]  :unleased  :nodes [SELECT]  :jobs  :dist  :events  :dash
:theme NAME  :help  :q
/REGEX  /!REGEX  /key=value   filter the focused pane (esc clears)"""


def binding_rows(app) -> list[tuple[str, str, str]]:
    """(keys, id, description) for the app's, the screen's and the tables' bindings,
    with the user's keymap applied."""
    from fleet.tui.widgets.linetable import LineTable

    keymap = getattr(app, "_keymap", {}) or {}
    keys: dict[str, list[str]] = {}
    desc: dict[str, str] = {}
    tables = list(app.query(LineTable).results())[:1]
    panes = list(getattr(app, "_panes", {}).values())
    for node in [app, app.screen, *panes, *tables]:
        for key, b in node._bindings:
            if not b.id:
                continue
            keys.setdefault(b.id, [])
            if key not in keys[b.id]:
                keys[b.id].append(key)
            desc.setdefault(b.id, b.description or b.action)
    rows = [(keymap.get(bid) or ",".join(k), bid, desc[bid]) for bid, k in keys.items()]
    return sorted(rows, key=lambda r: r[1])


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll { width: 84; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    HelpScreen .title { color: $accent; text-style: bold; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close",
                        id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        w = max((len(r[0]) for r in self.rows), default=4)
        lines = [f"{keys:<{w}}  {desc:<22} {bid}" for keys, bid, desc in self.rows]
        with VerticalScroll():
            yield Static("Keys (remap by id in config.yaml: keymap: {id: keys})",
                         classes="title")
            yield Static("\n".join(lines), id="bindings", markup=False)
            yield Static("\nCommands", classes="title")
            yield Static(COMMANDS_HELP, markup=False)
