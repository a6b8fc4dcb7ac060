"""`?`: the key bindings in effect (after the user's keymap), grouped by where
they work, each with its id (fleet/tui/keyhelp.py builds the list)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

COMMANDS_HELP = """\
:machines [k=v]  :unleased  :nodes [SELECT]  :jobs  :dist  :events  :dash
:theme NAME  :help  :q
/REGEX  /!REGEX  /key=value   filter the focused pane (esc clears)"""


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll { width: 84; max-width: 100%; height: 90%;
                                  border: thick $primary;
                                  background: $surface; padding: 0 1; }
    HelpScreen .title { color: $accent; text-style: bold; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close",
                        id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str, str]]]]):
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        rows = [r for _, section in self.sections for r in section]
        w = max((len(r[0]) for r in rows), default=4)
        text = Text()
        for i, (title, section) in enumerate(self.sections):
            text.append(("\n" if i else "") + title + "\n", style="bold")
            for keys, bid, desc in section:
                text.append(f"  {keys:<{w}}  {desc:<22} {bid}\n")
        text.rstrip()
        with VerticalScroll():
            yield Static("Keys (remap by id in config.yaml: keymap: {id: keys})",
                         classes="title")
            yield Static(text, id="bindings")
            yield Static("\nCommands", classes="title")
            yield Static(COMMANDS_HELP, markup=False)
