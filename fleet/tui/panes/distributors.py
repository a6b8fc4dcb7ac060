from __future__ import annotations

from typing import Hashable

from textual import work
from textual.binding import Binding

from fleet import records
from fleet.core.model import Distributor
from fleet.errors import FleetError
from fleet.tui.panes.base import Pane
from fleet.tui.screens.build import BuildDialog
from fleet.tui.screens.confirm import ConfirmDialog
from fleet.tui.widgets.linetable import Column


class DistributorsPane(Pane):
    """Each site's boot services, switched on or off. Verbs: switch the selected
    distributor on/off; build boot media (served from the selected one)."""

    kind = "distributors"
    title = "Distributors"
    number = 4
    BINDINGS = [
        Binding("o", "switch_distributor", "On/off", id="verb.distributor"),
        Binding("b", "build", "Build", id="verb.build"),
    ]
    WRITES = {"switch_distributor": "switch distributors", "build": "build boot media"}
    ROW_VERBS = Pane.ROW_VERBS | {"switch_distributor"}
    COLUMNS = [
        Column("site", "Site", 10),
        Column("interface", "Iface", 7),
        Column("address", "Address", 15),
        Column("on", "On", 4, styled=True),
        Column("artifacts", "Artifacts", 9),
        Column("seen", "Machines", 8),
    ]
    SORT = "site"

    def row(self, item: tuple[Distributor, int]):
        d, seen = item
        values = (d.site, d.interface, d.address, "on" if d.enabled else "off",
                  len(d.artifacts), seen)
        return d.name, values, {"on": "on" if d.enabled else "off"}

    async def record(self, key: Hashable) -> tuple[str, dict]:
        dist = {d.name: d for d in await self.fleet.engine.distributors()}[key]
        seen = self.table.rows[key].values[-1]
        return f"distributor {key}", records.distributor(dist, seen)

    # -- verbs ---------------------------------------------------------------------------

    def action_switch_distributor(self) -> None:
        names = self.targets()
        if not names:
            return
        name = names[0]
        enabled = self.table.rows[name].fields.get("on") == "on"
        word = "off" if enabled else "on"

        def confirmed(answer) -> None:
            if answer is not None:
                self._switch(name, not enabled)

        self.app.push_screen(ConfirmDialog(f"Switch distributor {name} {word}?", [name],
                                           action=f"Switch {word}"), confirmed)

    @work(group="verb", exit_on_error=False)
    async def _switch(self, name: str, enabled: bool) -> None:
        try:
            await self.fleet.engine.switch_distributor(name, enabled)
        except FleetError as err:
            self.notify(str(err), severity="error")
            return
        self.notify(f"distributor {name} switched {'on' if enabled else 'off'}")

    def action_build(self) -> None:
        if self.fleet.jobs is None:
            self.notify("builds arrive with the job runner (engine.jobs is not available)",
                        severity="warning")
            return
        key = self.table.cursor_key

        def done(job_id) -> None:
            if job_id is not None:
                self.notify(f"build queued as job {job_id}" if job_id else
                            "artifact already built (cached)")

        self.app.push_screen(BuildDialog(self.fleet.engine,
                                         str(key) if key is not None else None), done)
