"""Lease form: deployment (from the profile), then hostname and address, one pair
per machine when several are leased at once. Enter in any field leases. The
engine validates; its BadInput message is shown inline and the form stays open."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from fleet.errors import FleetError
from fleet.tui.screens.confirm import DIALOG_CSS, FORM_BINDINGS, name_targets
from fleet.tui.widgets.form_select import FormSelect

HOSTNAME_HINT = "node-<last 6 of MAC>"


class LeaseDialog(ModalScreen[list | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="LeaseDialog") + """
    LeaseDialog Input, LeaseDialog Select { margin-bottom: 1; }
    LeaseDialog #machines { height: auto; max-height: 14; margin-bottom: 1; }
    LeaseDialog .machine { height: 1; }
    LeaseDialog .machine Label { width: 19; color: $warning; }
    LeaseDialog .machine Input { width: 1fr; height: 1; border: none; margin: 0 1 0 0;
                                 padding: 0 1; background: $boost; }
    LeaseDialog .machine Input:focus { background: $accent 30%; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
                *FORM_BINDINGS]

    def __init__(self, engine, macs: list[str]):
        super().__init__()
        self.engine = engine
        self.macs = macs
        #: mac -> Machine leased by this form (a retry after an error skips them)
        self.leased: dict = {}

    def compose(self) -> ComposeResult:
        deployments = [(d.name, d.name) for d in self.engine.profile.deployments]
        many = len(self.macs) > 1
        with Vertical():
            yield Label(f"Lease {len(self.macs)} machine{'s' if many else ''}", classes="title")
            if not many:
                yield Static(name_targets(self.macs), classes="targets")
            yield Label("Deployment")
            # blank only when the profile declares no deployment (submit says so)
            yield FormSelect(deployments, id="deployment", allow_blank=not deployments,
                             value=deployments[0][1] if deployments else Select.NULL)
            if many:
                yield Label("Hostname and address (IPv4, optional) for each machine")
                with VerticalScroll(id="machines", can_focus=False):
                    for i, mac in enumerate(self.macs):
                        with Horizontal(classes="machine"):
                            yield Label(mac)
                            yield Input(placeholder=HOSTNAME_HINT, id=f"hostname-{i}",
                                        classes="hostname")
                            yield Input(placeholder="optional", id=f"address-{i}",
                                        classes="address")
            else:
                yield Label("Hostname")
                yield Input(placeholder=HOSTNAME_HINT, id="hostname")
                yield Label("Address (IPv4, optional)")
                yield Input(placeholder="10.91.0.20", id="address")
            yield Static("", classes="error", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Lease", variant="primary", id="lease")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "blink", True)
        self.query_one("#deployment").focus()

    @on(Input.Submitted)
    @on(FormSelect.Submitted)
    def _submitted(self) -> None:
        self.submit()

    @on(Button.Pressed, "#lease")
    def _lease(self) -> None:
        self.submit()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def _fields(self) -> list[tuple[str, str | None, str | None]]:
        """(mac, hostname, address) as typed, None where left empty."""
        def value(selector: str) -> str | None:
            return self.query_one(selector, Input).value.strip() or None

        if len(self.macs) == 1:
            return [(self.macs[0], value("#hostname"), value("#address"))]
        return [(mac, value(f"#hostname-{i}"), value(f"#address-{i}"))
                for i, mac in enumerate(self.macs)]

    @work(exclusive=True, group="lease", exit_on_error=False)
    async def submit(self) -> None:
        deployment = self.query_one("#deployment", Select).value
        if deployment is Select.NULL or deployment is None:
            self.query_one("#error", Static).update("choose a deployment")
            return
        for mac, hostname, address in self._fields():
            if mac in self.leased:
                continue
            try:
                self.leased[mac] = await self.engine.lease(mac, str(deployment), hostname,
                                                           address)
            except FleetError as err:
                n = len(self.leased)
                prefix = f"{n} leased; " if n else ""
                where = f"{mac}: " if len(self.macs) > 1 else ""
                self.query_one("#error", Static).update(f"{prefix}{where}{err}")
                return
        self.dismiss([self.leased[mac] for mac in self.macs])
