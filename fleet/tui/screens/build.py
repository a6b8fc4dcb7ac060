"""Build form: an artifact kind and the distributor to serve it; submits a job
(enter in any field builds)."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from fleet.errors import FleetError
from fleet.tui.screens.confirm import DIALOG_CSS, FORM_BINDINGS
from fleet.tui.widgets.form_select import FormSelect

KINDS = ("ipxe", "grub", "syslinux", "iso")


class BuildDialog(ModalScreen[int | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="BuildDialog") + """
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
                *FORM_BINDINGS]

    def __init__(self, engine, distributor: str | None = None):
        super().__init__()
        self.engine = engine
        self.distributor = distributor

    def compose(self) -> ComposeResult:
        sites = [(s.name, s.name) for s in self.engine.profile.sites if s.distributor]
        with Vertical():
            yield Label("Build boot media", classes="title")
            yield Label("Kind")
            yield FormSelect([(k, k) for k in KINDS], id="kind", allow_blank=False,
                             value="ipxe")
            yield Label("Serve from distributor (optional)")
            yield FormSelect(sites, id="distributor",
                             value=self.distributor or Select.NULL)
            yield Label("Label (ISO volume label, optional)")
            yield Input(id="label", placeholder="FLEET")
            yield Static("", classes="error", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Build", variant="primary", id="build")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "blink", True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#build")
    @on(Input.Submitted)
    @on(FormSelect.Submitted)
    def _go(self) -> None:
        self.submit()

    @work(exclusive=True, group="build", exit_on_error=False)
    async def submit(self) -> None:
        kind = str(self.query_one("#kind", Select).value)
        dist = self.query_one("#distributor", Select).value
        label = self.query_one("#label", Input).value.strip() or None
        options = {}
        if dist not in (None, Select.NULL):
            options["distributor"] = str(dist)
        if label:
            options["label"] = label
        try:
            outcome = await self.engine.builds.build(kind, wait=False, **options)
        except FleetError as err:
            self.query_one("#error", Static).update(str(err))
            return
        self.dismiss(getattr(outcome, "job_id", None) or 0)
