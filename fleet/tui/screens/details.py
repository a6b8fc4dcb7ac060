"""Full-screen views of one record: details (fields + recent events) and raw
(YAML or JSON, as the headless CLI prints it)."""

from __future__ import annotations

import json

import yaml
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from fleet.records import event_line


#: Control characters other than newline and tab, drawn as their Unicode pictures
#: (an escape sequence in a command must show, not act on the terminal).
_PICTURES = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {0x7F: 0x2421}


def visible(text: str) -> str:
    return text.translate(_PICTURES)


def _clean(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class DetailsScreen(Screen):
    DEFAULT_CSS = """
    DetailsScreen { background: $surface; }
    DetailsScreen #title { background: $panel; color: $accent; text-style: bold; padding: 0 1; }
    DetailsScreen .section { color: $primary; text-style: bold; padding: 1 1 0 1; }
    DetailsScreen .body { padding: 0 2; }
    DetailsScreen .verbatim { color: $secondary; text-style: bold; }
    DetailsScreen #note { background: $warning 25%; color: $foreground; padding: 0 1;
                          height: auto; }
    """
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back", id="details.back")]

    def __init__(self, title: str, record: dict, events: list,
                 sections: list[tuple[str, str]] = (), note: str | None = None):
        super().__init__()
        self.title_text = title
        #: shown first, under the title (why a demo machine misbehaves)
        self.note = note
        self.record = _clean(record)
        self.events = events
        #: (heading, text) shown whole after the fields: e.g. an SSH command, verbatim
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="title")
        if self.note:
            yield Static(self.note, id="note", markup=False)
        with VerticalScroll():
            width = max((len(k) for k in self.record), default=0)
            lines = []
            for key, value in self.record.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, default=str) if value else "-"
                lines.append(f"{key:<{width}}  {'-' if value is None else value}")
            yield Static("\n".join(lines), classes="body", id="fields", markup=False)
            for i, (heading, text) in enumerate(self.sections):
                yield Static(heading, classes="section")
                yield Static(visible(text), classes="body verbatim", id=f"section-{i}",
                             markup=False)
            yield Static(f"Recent events ({len(self.events)})", classes="section")
            yield Static("\n".join(event_line(e) for e in self.events) or "none",
                         classes="body", id="events", markup=False)
        yield Footer()


class RawScreen(Screen):
    DEFAULT_CSS = """
    RawScreen { background: $surface; }
    RawScreen #title { background: $panel; color: $accent; text-style: bold; padding: 0 1; }
    RawScreen #raw { padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back", id="raw.back"),
                Binding("t", "toggle", "YAML/JSON", id="raw.toggle")]

    def __init__(self, title: str, record: dict):
        super().__init__()
        self.title_text = title
        self.record = _clean(record)
        self.fmt = "yaml"

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        with VerticalScroll():
            yield Static("", id="raw", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._show()

    def text(self) -> str:
        if self.fmt == "json":
            return json.dumps(self.record, indent=2, default=str)
        return yaml.safe_dump(json.loads(json.dumps(self.record, default=str)),
                              sort_keys=False).rstrip()

    def _show(self) -> None:
        self.query_one("#title", Static).update(f"{self.title_text}  ({self.fmt})")
        self.query_one("#raw", Static).update(self.text())

    def action_toggle(self) -> None:
        self.fmt = "json" if self.fmt == "yaml" else "yaml"
        self._show()
