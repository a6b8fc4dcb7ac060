from __future__ import annotations

from typing import Hashable

from fleet import records
from fleet.core.model import Event
from fleet.tui.panes.base import Pane, clock_text
from fleet.tui.widgets.linetable import Column, Row

MAX_EVENTS = 5000
SSH_COMMAND = "ssh.command"


def command_text(e: Event) -> str | None:
    """The command of an `ssh.command` event, verbatim (its message is shortened)."""
    if e.kind != SSH_COMMAND:
        return None
    command = e.data.get("command")
    return command if isinstance(command, str) else None


def command_line(e: Event) -> str:
    """`via gw1 $ uptime`: how the Message column shows an SSH command."""
    via = e.data.get("via")
    return (f"via {via} " if via else "") + "$ " + (command_text(e) or "")


class EventsPane(Pane):
    """Every event, newest first (capped at MAX_EVENTS rows). SSH commands fleet
    ran show their command verbatim, in the accent style."""

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

    def __init__(self, *args, sites: bool = False, local_site: str | None = None, **kw):
        """`sites`: the profile has remote sites: a Site column says where each
        event happened (this process's own are at `local_site`, or `local`)."""
        self.sites = sites
        self.local_site = local_site
        if sites:
            self.COLUMNS = [self.COLUMNS[0], Column("site", "Site", 8), *self.COLUMNS[1:]]
        super().__init__(*args, **kw)
        #: row key -> the Event behind each row (details and raw views show its data):
        #: this process's events by id, a remote site's by `site:id` (ids are per site)
        self.events: dict[Hashable, Event] = {}
        self.table.row_style = _row_style
        self.table.follow_top = True

    def row(self, item: Event | tuple[str, Event]):
        site, e = item if isinstance(item, tuple) else (self.local_site or "local", item)
        # zero-padded: rows of one moment sort by id, as a number would
        key: Hashable = f"{site}:{e.id:012d}" if isinstance(item, tuple) else e.id
        self.events[key] = e
        message = command_line(e) if command_text(e) is not None else e.message
        values = (e.ts, e.severity.value, e.kind, e.subject, message)
        fields = {"severity": e.severity.value, "kind": e.kind, "subject": e.subject}
        if self.sites:
            values = (e.ts, site, *values[1:])
            fields["site"] = site or ""
        return key, values, fields

    def copy_text(self, keys) -> str:
        """An SSH command verbatim, else the message; one line per event."""
        out = []
        for key in keys:
            e = self.events.get(key)
            if e is not None:
                command = command_text(e)
                out.append(command if command is not None else e.message)
        return "\n".join(out)

    async def record(self, key: Hashable) -> tuple[str, dict]:
        # the Event behind the row (the store's newest event is not this one)
        return f"event {key}", records.event(self.events[key])

    def record_subject(self, key: Hashable, record: dict) -> str | None:
        # a remote site's event: this process's events about its subject are not its
        return record.get("subject") if isinstance(key, int) else None

    def record_sections(self, key: Hashable) -> list[tuple[str, str]]:
        command = command_text(self.events[key])
        return [("Command (verbatim)", command)] if command is not None else []

    def load(self, events) -> None:
        self.events.clear()
        super().load(events)
        self._trim()

    def add(self, events: list[Event], site: str | None = None) -> None:
        """This process's events, or (with `site`) a remote site's."""
        self.update(events if site is None else [(site, e) for e in events])
        self._trim()

    def _trim(self) -> None:
        extra = len(self.table.rows) - MAX_EVENTS
        if extra > 0:
            oldest = sorted(self.table.rows, key=lambda k: (self.events[k].ts, self.events[k].id))
            with self.table.batch():
                for key in oldest[:extra]:
                    self.table.remove(key)
                    self.events.pop(key, None)


def _row_style(row: Row) -> str | None:
    return "accent" if row.fields.get("kind") == SSH_COMMAND else None
