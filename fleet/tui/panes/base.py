"""A pane: a titled, focusable box with one LineTable and a "last updated" stamp."""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Hashable, Iterable, Mapping

from textual.app import ComposeResult
from textual.containers import Vertical

from fleet.core.durations import format_duration
from fleet.tui.widgets.linetable import Column, LineTable


def clock_text(ts: float | None, _now: float = 0.0) -> str:
    if not ts:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


def ago_text(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    return format_duration(now - ts)


class Pane(Vertical):
    """Subclasses set `kind`, `title`, `COLUMNS` and `row(record)`."""

    DEFAULT_CSS = """
    Pane { border: round $primary 40%; height: 1fr; border-title-color: $text-muted;
           border-subtitle-color: $text-muted; }
    Pane:focus-within { border: round $accent; border-title-color: $accent;
                        border-title-style: bold; }
    """
    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    number: ClassVar[int] = 0
    COLUMNS: ClassVar[list[Column]] = []
    SORT: ClassVar[str | None] = None
    REVERSE: ClassVar[bool] = False
    #: row fields whose value counts the table keeps up to date (header totals)
    COUNTED: ClassVar[tuple[str, ...]] = ()

    def __init__(self, clock: Callable[[], float] = time.time, **kw):
        super().__init__(id=f"pane-{self.kind}", **kw)
        self.clock = clock
        self.updated_at: float | None = None
        #: the store's row count while only the first rows are shown (None: all are)
        self.expected: int | None = None
        self.selection_label = ""
        self.table = LineTable(self.COLUMNS, sort_column=self.SORT, clock=clock,
                               counted=self.COUNTED, id=f"table-{self.kind}")
        self.table.sort_reverse = self.REVERSE

    def compose(self) -> ComposeResult:
        yield self.table

    def on_mount(self) -> None:
        self.update_title()

    def row(self, record: Any) -> tuple[Hashable, tuple, Mapping[str, str]]:
        raise NotImplementedError

    def load(self, records: Iterable[Any], *, expected: int | None = None) -> None:
        """A full snapshot: reconcile (adds, updates, removals). With `expected`
        (the store's count), `records` are only the first rows; the rest follow."""
        self.expected = expected
        self.table.replace_all(self.row(r) for r in records)
        self.touch()

    @property
    def total(self) -> int:
        """How many rows the pane has, or will have once the loading finishes."""
        return len(self.table.rows) if self.expected is None else self.expected

    def update(self, records: Iterable[Any]) -> None:
        with self.table.batch():
            for r in records:
                key, values, fields = self.row(r)
                self.table.upsert(key, values, fields)
        self.touch()

    def remove(self, keys: Iterable[Hashable]) -> None:
        with self.table.batch():
            for key in keys:
                self.table.remove(key)
        self.touch()

    def copy_text(self, keys: list[Hashable]) -> str:
        """What `c` puts on the clipboard for these rows: their keys."""
        return " ".join(str(k) for k in keys)

    def touch(self) -> None:
        self.updated_at = self.clock()
        self.update_title()

    def update_title(self) -> None:
        t = self.table
        shown = t.row_count
        total = len(t.rows)
        count = f"{shown}" if shown == total else f"{shown}/{total}"
        if self.expected is not None and self.expected > total:
            count += f" of {self.expected}, loading…"
        extra = []
        if t.filter:
            extra.append(f"/{t.filter.text}")
        if self.selection_label:
            extra.append(self.selection_label)
        if t.marks:
            extra.append(f"{len(t.marks)} marked")
        suffix = "  " + " ".join(extra) if extra else ""
        title = f"[{self.number}] {self.title} ({count}){suffix}"
        if title != self.border_title:
            self.border_title = title
        if self.updated_at:
            subtitle = "updated " + time.strftime("%H:%M:%S", time.localtime(self.updated_at))
            if subtitle != self.border_subtitle:
                self.border_subtitle = subtitle
