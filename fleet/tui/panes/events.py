from __future__ import annotations

from fleet.core.model import Event
from fleet.tui.panes.base import Pane, clock_text
from fleet.tui.widgets.linetable import Column

MAX_EVENTS = 5000


class EventsPane(Pane):
    """Every event, newest first (capped at MAX_EVENTS rows)."""

    kind = "events"
    title = "Events"
    number = 5
    COLUMNS = [
        Column("ts", "Time", 14, fmt=clock_text),
        Column("severity", "Sev", 7, styled=True),
        Column("kind", "Kind", 22),
        Column("subject", "Subject", 18),
        Column("message", "Message", 70),
    ]
    SORT = "ts"
    REVERSE = True

    def row(self, e: Event):
        return e.id, (e.ts, e.severity.value, e.kind, e.subject, e.message), {
            "severity": e.severity.value, "kind": e.kind, "subject": e.subject}

    def add(self, events: list[Event]) -> None:
        self.update(events)
        extra = len(self.table.rows) - MAX_EVENTS
        if extra > 0:
            for key in sorted(self.table.rows)[:extra]:
                self.table.remove(key)
