"""Lease form: deployment (from the profile), hostname, address. The engine
validates; its BadInput message is shown inline and the form stays open."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from fleet.errors import FleetError
from fleet.tui.screens.confirm import DIALOG_CSS, name_targets


class LeaseDialog(ModalScreen[list | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="LeaseDialog") + """
    LeaseDialog Input, LeaseDialog Select { margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, engine, macs: list[str]):
        super().__init__()
        self.engine = engine
        self.macs = macs

    def compose(self) -> ComposeResult:
        deployments = [(d.name, d.name) for d in self.engine.profile.deployments]
        many = len(self.macs) > 1
        with Vertical():
            yield Label(f"Lease {len(self.macs)} machine{'s' if many else ''}", classes="title")
            yield Static(name_targets(self.macs), classes="targets")
            yield Label("Deployment")
            # blank only when the profile declares no deployment (submit says so)
            yield Select(deployments, id="deployment", allow_blank=not deployments,
                         value=deployments[0][1] if deployments else Select.NULL)
            yield Label("Hostname" + (" (one per machine: leave empty for defaults)"
                                      if many else ""))
            yield Input(placeholder="node-<last 6 of MAC>", id="hostname", disabled=many)
            yield Label("Address (IPv4, optional)")
            yield Input(placeholder="10.91.0.20", id="address", disabled=many)
            yield Static("", classes="error", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Lease", variant="primary", id="lease")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "blink", True)
        self.query_one("#deployment").focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.submit()

    @on(Button.Pressed, "#lease")
    def _lease(self) -> None:
        self.submit()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(exclusive=True, group="lease", exit_on_error=False)
    async def submit(self) -> None:
        deployment = self.query_one("#deployment", Select).value
        if deployment is Select.NULL or deployment is None:
            self.query_one("#error", Static).update("choose a deployment")
            return
        hostname = self.query_one("#hostname", Input).value.strip() or None
        address = self.query_one("#address", Input).value.strip() or None
        done = []
        try:
            for mac in self.macs:
                done.append(await self.engine.lease(mac, str(deployment), hostname, address))
        except FleetError as err:
            prefix = f"{len(done)} leased; " if done else ""
            self.query_one("#error", Static).update(f"{prefix}{err}")
            return
        self.dismiss(done)
