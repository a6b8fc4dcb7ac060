"""What `?` lists: every key binding with its id (for `keymap:` in config.yaml),
as a person reads keys (`?`, `ctrl+]`, not `question_mark`), grouped by where it
works (everywhere, on every pane, on one pane, in shell tabs), in the order the
bindings are declared, with the user's keymap applied."""

from __future__ import annotations

from typing import Iterable

from textual.binding import Binding
from textual.keys import format_key

from fleet.tui.keymap import APP_BINDINGS
from fleet.tui.panes import DistributorsPane, MachinesPane, NodesPane, Pane
from fleet.tui.shells import ShellTab
from fleet.tui.widgets.linetable import LineTable

#: keys whose Textual display is a symbol that reads worse in a list
_WORDS = {"enter": "enter", "up": "up", "down": "down", "left": "left", "right": "right"}

Row = tuple[str, str, str]  # (keys, id, description)


def key_name(key: str) -> str:
    """`question_mark` -> `?`, `ctrl+right_square_bracket` -> `ctrl+]`."""
    *modifiers, name = key.strip().split("+")
    return "+".join([*modifiers, _WORDS.get(name) or format_key(name)])


def _rows(bindings: Iterable[Binding], keymap: dict[str, str],
          where=lambda b: True) -> list[Row]:
    rows: list[Row] = []
    for b in bindings:
        if not b.id or not where(b):
            continue
        keys = keymap.get(b.id) or b.key
        rows.append((", ".join(key_name(k) for k in keys.split(",")), b.id,
                     b.description or b.action))
    return rows


def help_sections(keymap: dict[str, str] | None = None) -> list[tuple[str, list[Row]]]:
    keymap = keymap or {}
    app_keys = [b for b in APP_BINDINGS if not b.action.startswith("unavailable")]
    in_tabs = lambda b: b.id.startswith(("tab.", "shell."))  # noqa: E731
    sections = [
        ("Everywhere", _rows(app_keys, keymap, lambda b: not in_tabs(b))),
        ("Every pane", _rows(Pane.BINDINGS, keymap) + _rows(LineTable.BINDINGS, keymap)),
    ]
    for pane in (MachinesPane, NodesPane, DistributorsPane):
        sections.append((f"{pane.title} pane ({pane.number})",
                         _rows(pane.__dict__.get("BINDINGS", ()), keymap)))
    sections.append(("Shell tabs", _rows(app_keys, keymap, in_tabs)
                     + _rows(ShellTab.BINDINGS, keymap)))
    return [(title, rows) for title, rows in sections if rows]
