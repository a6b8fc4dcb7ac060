"""A pane: a titled, focusable box with one LineTable and a "last updated" stamp,
and the verbs (key bindings) that act on its rows.

Each pane binds its own verbs, so the footer shows what the focused pane can
do. One `check_action` gates them: a verb in `WRITES` is hidden in read-only
mode, a verb in `ROW_VERBS` is shown disabled while no row is selected. The
binding ids (`verb.*`) are the keymap's, as before.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable, Iterable, Mapping

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.dom import NoScreen

from fleet.core.durations import format_duration
from fleet.errors import FleetError
from fleet.tui.screens.details import DetailsScreen, RawScreen
from fleet.tui.widgets.linetable import Column, LineTable

if TYPE_CHECKING:
    from fleet.tui.app import FleetApp


def clock_text(ts: float | None, _now: float = 0.0) -> str:
    if not ts:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


#: drawn where marks go on the rows of a site that is away (their values are as last heard)
STALE_FLAG = "~"


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
    BINDINGS = [
        Binding("enter", "details", "Details", id="verb.details"),
        Binding("c", "copy", "Copy", show=False, id="verb.copy"),
        Binding("y", "raw", "Raw", show=False, id="verb.raw"),
    ]
    #: the actions that change the fleet -> what read-only mode refuses ("lease machines")
    WRITES: ClassVar[dict[str, str]] = {}
    #: the actions that act on the marked rows, else the row under the cursor
    ROW_VERBS: ClassVar[frozenset[str]] = frozenset({"details", "copy", "raw"})
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
        self._had_targets = False
        #: sites that are away: their rows (field `site`) are drawn stale; the note
        #: says since when (`rack2 away since 10:42:07 (last heard 10:41:55)`)
        self.stale_sites: frozenset[str] = frozenset()
        self.stale_note = ""

    @property
    def fleet(self) -> "FleetApp":
        return self.app  # type: ignore[return-value]

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
        self._sync_bindings()
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
        if self.updated_at or self.stale_note:
            subtitle = ("updated " + time.strftime("%H:%M:%S", time.localtime(self.updated_at))
                        if self.updated_at else "")
            if self.stale_note:
                subtitle = f"{STALE_FLAG} {self.stale_note}" + (
                    f" · {subtitle}" if subtitle else "")
            if subtitle != self.border_subtitle:
                self.border_subtitle = subtitle

    def set_stale(self, sites: frozenset[str], note: str) -> None:
        """Draw the rows of these sites stale, and say why under the pane."""
        if (sites, note) != (self.stale_sites, self.stale_note):
            self.stale_sites, self.stale_note = frozenset(sites), note
            self.table.refresh()
            self.update_title()

    def is_stale(self, row) -> bool:
        return bool(self.stale_sites) and row.fields.get("site") in self.stale_sites

    # -- verbs ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.screen is not self.app.screen:
            return False  # a dialog or details screen is up: its keys, not these
        if action in self.WRITES and self.fleet.read_only:
            return False  # hidden: the header says READ-ONLY
        if action in self.ROW_VERBS and not self.has_targets:
            return None  # shown, disabled: there is no row to act on
        return True

    @property
    def has_targets(self) -> bool:
        return bool(self.table.marks) or self.table.row_count > 0

    def _sync_bindings(self) -> None:
        """Tell the footer when the row verbs become (un)available."""
        has = self.has_targets
        if has != self._had_targets:
            self._had_targets = has
            with contextlib.suppress(NoScreen):  # a feed batch as the console quits
                self.refresh_bindings()

    def targets(self) -> list[str]:
        return [str(k) for k in self.table.targets()]

    def action_details(self) -> None:
        key = self.table.cursor_key
        if key is not None:
            self.open_record(key, raw=False)

    def action_raw(self) -> None:
        key = self.table.cursor_key
        if key is not None:
            self.open_record(key, raw=True)

    def action_copy(self) -> None:
        keys = self.table.targets()
        if not keys:
            return
        text = self.copy_text(keys)  # names, MACs; an event's command or message
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {text if len(text) < 60 else text[:57] + '…'}", markup=False)

    async def record(self, key: Hashable) -> tuple[str, dict]:
        """(title, record as the headless CLI prints it) for the details views."""
        raise NotImplementedError

    def record_sections(self, key: Hashable) -> list[tuple[str, str]]:
        """More sections for the details screen (a verbatim command)."""
        return []

    def record_note(self, key: Hashable) -> str | None:
        """A note shown first on the details screen."""
        return None

    def record_subject(self, key: Hashable, record: dict) -> str | None:
        """Whose recent events the details screen lists."""
        return str(key)

    @work(group="details", exclusive=True, exit_on_error=False)
    async def open_record(self, key: Hashable, raw: bool) -> None:
        try:
            title, record = await self.record(key)
        except (FleetError, KeyError) as err:
            self.notify(str(err), severity="error")
            return
        if raw:
            await self.app.push_screen(RawScreen(title, record))
            return
        subject = self.record_subject(key, record)
        recent = await self.fleet.engine.events(20, subject) if subject else []
        await self.app.push_screen(DetailsScreen(title, record, recent,
                                                 self.record_sections(key),
                                                 self.record_note(key)))
