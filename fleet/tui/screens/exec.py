"""`x`: run one command on the selected nodes through the access plane; output
lines appear as they arrive, prefixed by node."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RichLog, Static

from fleet.errors import FleetError
from fleet.tui.screens.confirm import DIALOG_CSS, FORM_BINDINGS, name_targets


class ExecDialog(ModalScreen[None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ExecDialog") + """
    ExecDialog > Vertical { width: 110; }
    ExecDialog RichLog { height: 16; border: round $primary 40%; }
    """
    BINDINGS = [Binding("escape", "cancel", "Close", id="dialog.cancel"),
                *FORM_BINDINGS]

    def __init__(self, engine, nodes: list[str]):
        super().__init__()
        self.engine = engine
        self.nodes = nodes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Run on {len(self.nodes)} node(s)", classes="title")
            yield Static(name_targets(self.nodes, 5), classes="targets")
            yield Input(placeholder="command, e.g. uptime", id="command")
            yield Static("", classes="error", id="error")
            yield RichLog(id="output", markup=False, wrap=False, max_lines=5000)
            with Horizontal(classes="buttons"):
                yield Button("Close", id="cancel")
                yield Button("Run", variant="warning", id="run")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "blink", True)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#run")
    @on(Input.Submitted)
    def _run(self) -> None:
        self.run_command(self.query_one("#command", Input).value)

    @work(exclusive=True, group="exec", exit_on_error=False)
    async def run_command(self, command: str) -> None:
        log = self.query_one("#output", RichLog)
        error = self.query_one("#error", Static)
        error.update("")
        access = self.engine.access

        def on_line(node: str, stream: str, line: str) -> None:
            log.write(f"{node}{' !' if stream == 'stderr' else ':'} {line}")

        def on_result(r) -> None:
            status = "ok" if r.ok else f"{r.error_kind}: {r.error or r.exit_status}"
            log.write(f"-- {r.node}: {status} in {r.duration_s:.1f}s"
                      + (f" via {r.via}" if r.via else ""))

        try:
            targets = await access.targets(self.nodes)
            report = await access.exec(targets, command, on_line=on_line,
                                       on_result=on_result)
        except FleetError as err:
            error.update(str(err))
            return
        failed = len(report.failed)
        log.write(f"-- {len(report.results) - failed} ok, {failed} failed, "
                  f"{report.duration_s:.1f}s")
