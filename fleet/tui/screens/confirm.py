"""The one gate for destructive actions: a dialog that names its targets."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, Static

DIALOG_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{ width: 72; max-width: 100%; height: auto; max-height: 100%;
                    border: thick $primary; background: $surface; padding: 1 2;
                    overflow-y: auto; }}
{name} .title {{ text-style: bold; color: $accent; margin-bottom: 1; }}
{name} .targets {{ color: $warning; height: auto; max-height: 12; margin-bottom: 1; }}
{name} .error {{ color: $error; height: auto; }}
{name} .buttons {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 2; }}
"""


#: Tab and shift+tab in a form move the focus as the key arrives (priority), not
#: after it came back from the focused field: keys typed right behind a Tab (a
#: fast typist, a paste) belong to the next field, not the one just left.
FORM_BINDINGS = [
    Binding("tab", "app.focus_next", "Next field", show=False, priority=True),
    Binding("shift+tab", "app.focus_previous", "Previous field", show=False,
            priority=True),
]


def name_targets(targets: list[str], limit: int = 10) -> str:
    shown = "\n".join(f"  {t}" for t in targets[:limit])
    if len(targets) > limit:
        shown += f"\n  … and {len(targets) - limit} more"
    return shown


class ConfirmDialog(ModalScreen[dict | None]):
    """Dismisses with {"wipe": bool} (or {}) when confirmed, None when cancelled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
                *FORM_BINDINGS]

    def __init__(self, title: str, targets: list[str], *, action: str = "Confirm",
                 wipe_option: bool = False):
        super().__init__()
        self.title_text = title
        self.targets = targets
        self.action_label = action
        self.wipe_option = wipe_option

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            yield Static(name_targets(self.targets), classes="targets", id="targets")
            if self.wipe_option:
                yield Checkbox("wipe the disks on next boot", id="wipe")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.action_label, variant="error", id="confirm")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            out = {}
            if self.wipe_option:
                out["wipe"] = self.query_one("#wipe", Checkbox).value
            self.dismiss(out)
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
