"""A keyed table that renders only the rows on screen (Textual's Line API).

DataTable re-lays-out on every change and removes rows in O(n); at 10,000 rows
with hundreds of changes a second it stalls. This widget keeps:

- `rows`: key -> Row (raw cell values, the text the filter matches, fields for
  `key=value` terms);
- `_order`: the sorted list of (sort key, row key) of the rows passing the filter,
  maintained with `bisect` (O(log n) search; the list shift is a memmove);

so an update costs a dict write, at most one bisect removal and one insertion,
and a repaint of one line when the row is on screen. A filter or sort change
rebuilds `_order` once (O(n log n)). Cells are formatted at render time, so a
"time since" column needs no per-row updates: a timer just repaints.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, insort
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

CHANGE_MARK_SECONDS = 1.5


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    fmt: Callable[[Any, float], str] | None = None  # (value, now) -> text
    styled: bool = False  # colour cells by the theme variable `state-<value>`
    dynamic: bool = False  # formatted from the clock: not part of the filter text


@dataclass
class Row:
    key: Hashable
    values: tuple
    fields: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None  # what a regex filter searches; built on first use


def _sortable(value: Any) -> tuple:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value).lower())


class Filter:
    """`/` syntax: a regex (case-insensitive), `!regex` inverts, `key=value` terms
    match a row's fields (labels, state, site); terms separated by spaces all apply."""

    def __init__(self, text: str):
        self.text = text.strip()
        self.terms: list[tuple[str, Any, bool]] = []
        for term in self.text.split():
            negate = term.startswith("!")
            if negate:
                term = term[1:]
            if not term:
                continue
            if re.fullmatch(r"[\w.\-/]+!?=[^=]*", term):
                k, _, v = term.partition("=")
                if k.endswith("!"):
                    k, negate = k[:-1], not negate
                self.terms.append(("field", (k, v), negate))
            else:
                try:
                    self.terms.append(("re", re.compile(term, re.I), negate))
                except re.error as err:
                    raise ValueError(f"bad filter {term!r}: {err}") from None

    def __bool__(self) -> bool:
        return bool(self.terms)

    def field_keys(self) -> set[str]:
        """The keys of its `key=value` terms."""
        return {what[0] for kind, what, _ in self.terms if kind == "field"}

    def matches(self, row: Row) -> bool:
        for kind, what, negate in self.terms:
            if kind == "re":
                hit = what.search(row.text) is not None
            else:
                k, v = what
                hit = str(row.fields.get(k, "")) == v
            if hit == negate:
                return False
        return True


class LineTable(ScrollView, can_focus=True):
    """A keyed, sortable, filterable table rendering only visible lines."""

    DEFAULT_CSS = """
    LineTable { background: $surface; height: 1fr; scrollbar-size-horizontal: 0; }
    LineTable > .linetable--header { text-style: bold; color: $text-muted; background: $panel; }
    LineTable > .linetable--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    LineTable > .linetable--cursor-blurred { background: $block-cursor-blurred-background; }
    LineTable > .linetable--marked { color: $warning; text-style: bold; }
    LineTable > .linetable--changed { background: $accent 40%; }
    LineTable > .linetable--accent { color: $secondary; text-style: bold; }
    LineTable > .linetable--stale { color: $text-muted; text-style: dim; }
    """
    COMPONENT_CLASSES = {"linetable--header", "linetable--cursor", "linetable--cursor-blurred",
                         "linetable--marked", "linetable--changed", "linetable--accent",
                         "linetable--stale"}
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False, id="table.page-up"),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False, id="table.page-down"),
        Binding("home,g", "edge(0)", "Top", show=False, id="table.top"),
        Binding("end,G", "edge(1)", "Bottom", show=False, id="table.bottom"),
        Binding("left", "scroll_columns(-8)", "Scroll left", show=False, id="table.left"),
        Binding("right", "scroll_columns(8)", "Scroll right", show=False, id="table.right"),
        Binding("space", "toggle_mark", "Mark", id="table.mark"),
        Binding("less_than_sign", "sort(-1)", "Sort ←", show=False, id="table.sort-prev"),
        Binding("greater_than_sign", "sort(1)", "Sort →", show=False, id="table.sort-next"),
    ]

    cursor = reactive(0, repaint=False, always_update=True)

    class Selected(Message):
        def __init__(self, table: "LineTable", key: Hashable | None):
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, columns: Iterable[Column], *, sort_column: str | None = None,
                 clock: Callable[[], float] = time.time, counted: Iterable[str] = (), **kw):
        super().__init__(**kw)
        #: field -> Counter of its values over all rows, kept as rows change, so a
        #: header's totals cost nothing per refresh (not a pass over 10,000 rows)
        self.counts: dict[str, Counter] = {f: Counter() for f in counted}
        self.columns: list[Column] = list(columns)
        self._col_index = {c.key: i for i, c in enumerate(self.columns)}
        self.rows: dict[Hashable, Row] = {}
        self._sortkey: dict[Hashable, tuple] = {}
        self._order: list[tuple[tuple, Hashable]] = []
        self.sort_column = sort_column or self.columns[0].key
        self.sort_reverse = False
        self.filter = Filter("")
        self.key_filter: set | None = None  # rows picked elsewhere (`:nodes site=rack1`)
        self.marks: set[Hashable] = set()
        self.changed: dict[Hashable, tuple[float, frozenset[int]]] = {}
        self.clock = clock
        self._cursor_key: Hashable | None = None
        self._styles: dict[str, Style] = {}
        self._width = sum(c.width + 1 for c in self.columns) + 1  # +1: the mark column
        self._batch_depth = 0
        self._batch_dirty = False
        #: a cursor on the first row stays there as rows arrive above it (a log, newest
        #: first: the view keeps showing the newest); elsewhere it follows its row
        self.follow_top = False
        #: row -> "accent" (e.g. SSH commands) or "stale" (a site that is away) to draw
        #: the row in that style, or None
        self.row_style: Callable[[Row], str | None] | None = None
        #: row -> a one-cell flag drawn where marks go, on unmarked rows (or None)
        self.row_flag: Callable[[Row], str | None] | None = None

    # -- data -------------------------------------------------------------------

    def _key_of(self, row: Row) -> tuple:
        i = self._col_index[self.sort_column]
        return (_sortable(row.values[i]), _sortable(row.key))

    def _text_of(self, values: tuple) -> str:
        parts = []
        for col, value in zip(self.columns, values):
            if col.dynamic or value is None:
                continue
            parts.append(col.fmt(value, 0.0) if col.fmt else str(value))
        return " ".join(parts)

    def upsert(self, key: Hashable, values: tuple, fields: Mapping[str, str] | None = None,
               *, mark_changes: bool = True) -> bool:
        """Add or update one row. Returns True when something visible changed."""
        old = self.rows.get(key)
        if old is not None and old.values == values and (fields is None or old.fields == fields):
            return False
        row = Row(key, values, fields if fields is not None else (old.fields if old else {}))
        self.rows[key] = row
        self._count(old, -1)
        self._count(row, 1)
        if old is not None and mark_changes:
            # a clock-driven cell (time since last seen) moving on is not news
            cols = frozenset(i for i, (a, b) in enumerate(zip(old.values, values))
                             if a != b and not self.columns[i].dynamic)
            if cols:
                self.changed[key] = (self.clock() + CHANGE_MARK_SECONDS, cols)
        new_sort = self._key_of(row)
        old_sort = self._sortkey.get(key)
        was_in = old_sort is not None
        now_in = self._matches(row)
        if was_in and (not now_in or old_sort != new_sort):
            self._remove_from_order(old_sort, key)
        if now_in and (not was_in or old_sort != new_sort):
            insort(self._order, (new_sort, key))
            self._sortkey[key] = new_sort
        elif not now_in:
            self._sortkey.pop(key, None)
        if was_in != now_in or old_sort != new_sort:
            self._after_order_change()
        else:
            self._refresh_key(key)
        return True

    def remove(self, key: Hashable) -> None:
        old = self.rows.pop(key, None)
        if old is None:
            return
        self._count(old, -1)
        self.marks.discard(key)
        self.changed.pop(key, None)
        old_sort = self._sortkey.pop(key, None)
        if old_sort is not None:
            self._remove_from_order(old_sort, key)
            self._after_order_change()

    def replace_all(self, rows: Iterable[tuple[Hashable, tuple, Mapping[str, str]]]) -> None:
        """Reconcile with a full snapshot: updates (changed cells marked), adds, and
        removes the missing keys; then one sort (10,000 upserts would cost 10,000
        bisections and list shifts)."""
        old = self.rows
        new: dict[Hashable, Row] = {}
        until = self.clock() + CHANGE_MARK_SECONDS
        changes = 0
        for key, values, fields in rows:
            prev = old.get(key)
            if prev is not None and prev.values == values and prev.fields == fields:
                new[key] = prev  # unchanged: keeps its cached filter text
                continue
            changes += 1
            new[key] = Row(key, values, fields)
            if prev is not None:
                cols = frozenset(i for i, (a, b) in enumerate(zip(prev.values, values))
                                 if a != b)
                if cols:
                    self.changed[key] = (until, cols)
        gone = old.keys() - new.keys() if len(new) - changes != len(old) else ()
        self.marks.difference_update(gone)
        for key in gone:
            self.changed.pop(key, None)
        self.rows = new
        for name, counter in self.counts.items():
            counter.clear()
            counter.update(r.fields.get(name) for r in new.values())
        if changes or gone or not old:
            self.rebuild()

    def _count(self, row: Row | None, step: int) -> None:
        if row is None:
            return
        for name, counter in self.counts.items():
            value = row.fields.get(name)
            counter[value] += step
            if not counter[value]:
                del counter[value]

    @contextmanager
    def batch(self):
        """Many changes, one re-layout at the end."""
        self._batch_depth += 1
        try:
            yield self
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._batch_dirty:
                self._batch_dirty = False
                self._after_order_change()

    def _matches(self, row: Row) -> bool:
        if self.key_filter is not None and row.key not in self.key_filter:
            return False
        if not self.filter:
            return True
        if row.text is None:
            row.text = self._text_of(row.values)
        return self.filter.matches(row)

    def _remove_from_order(self, sortkey: tuple, key: Hashable) -> None:
        i = bisect_left(self._order, (sortkey, key))
        if i < len(self._order) and self._order[i][1] == key:
            del self._order[i]

    def rebuild(self) -> None:
        """Re-sort and re-filter everything (after a filter or sort change)."""
        self._sortkey = {}
        for key, row in self.rows.items():
            if self._matches(row):
                self._sortkey[key] = self._key_of(row)
        self._order = sorted((v, k) for k, v in self._sortkey.items())
        self._after_order_change()

    def field_keys(self) -> set[str]:
        """Every field key some row has (what `/key=value` can match)."""
        keys: set[str] = set()
        for row in self.rows.values():
            keys.update(row.fields)
        return keys

    def set_filter(self, text: str) -> None:
        self.filter = Filter(text)  # ValueError for a bad regex, before changing anything
        self.rebuild()

    def set_sort(self, column: str, reverse: bool = False) -> None:
        self.sort_column = column
        self.sort_reverse = reverse
        self.rebuild()

    # -- order and cursor ----------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    def key_at(self, index: int) -> Hashable | None:
        n = len(self._order)
        if not 0 <= index < n:
            return None
        if self.sort_reverse:
            index = n - 1 - index
        return self._order[index][1]

    def index_of(self, key: Hashable) -> int | None:
        sortkey = self._sortkey.get(key)
        if sortkey is None:
            return None
        i = bisect_left(self._order, (sortkey, key))
        if i < len(self._order) and self._order[i][1] == key:
            return len(self._order) - 1 - i if self.sort_reverse else i
        return None

    @property
    def cursor_key(self) -> Hashable | None:
        return self.key_at(self.cursor)

    def keys_on_screen(self) -> list[Hashable]:
        """The keys of the rows drawn now (below the header line)."""
        top = self.scroll_offset.y
        keys = (self.key_at(i) for i in range(top, top + max(0, self.size.height - 1)))
        return [k for k in keys if k is not None]

    def visible_keys(self) -> list[Hashable]:
        keys = [k for _, k in self._order]
        return keys[::-1] if self.sort_reverse else keys

    def _after_order_change(self) -> None:
        if self._batch_depth:
            self._batch_dirty = True
            return
        self.virtual_size = Size(self._width, len(self._order) + 1)
        if self._cursor_key is not None and not (self.follow_top and self.cursor == 0):
            index = self.index_of(self._cursor_key)
            if index is not None:
                self.set_reactive(LineTable.cursor, index)
        self.set_reactive(LineTable.cursor, max(0, min(self.cursor, len(self._order) - 1)))
        self._cursor_key = self.key_at(self.cursor)
        self.refresh()

    def _refresh_key(self, key: Hashable) -> None:
        index = self.index_of(key)
        if index is None:
            return
        y = index + 1 - self.scroll_offset.y
        if 1 <= y < self.size.height:
            self.refresh_line(y)

    def watch_cursor(self, old: int, new: int) -> None:
        self._cursor_key = self.key_at(new)
        self._scroll_cursor_into_view()
        self.refresh()
        self.post_message(self.Selected(self, self._cursor_key))

    def _scroll_cursor_into_view(self) -> None:
        body = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)

    def move_cursor_to(self, key: Hashable) -> bool:
        index = self.index_of(key)
        if index is None:
            return False
        self.cursor = index
        return True

    def action_cursor(self, delta: int) -> None:
        if self._order:
            self.cursor = max(0, min(self.cursor + delta, len(self._order) - 1))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_edge(self, end: int) -> None:
        if self._order:
            self.cursor = len(self._order) - 1 if end else 0

    def action_scroll_columns(self, delta: int) -> None:
        self.scroll_to(x=max(0, self.scroll_offset.x + delta), animate=False, immediate=True)

    def action_toggle_mark(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        self.marks.symmetric_difference_update({key})
        self._refresh_key(key)
        self.action_cursor(1)
        self._notify_parent()

    def _notify_parent(self) -> None:
        update = getattr(self.parent, "update_title", None)
        if update is not None:
            update()

    def action_sort(self, step: int) -> None:
        i = self._col_index[self.sort_column]
        self.set_sort(self.columns[(i + step) % len(self.columns)].key, self.sort_reverse)

    def clear_marks(self) -> None:
        self.marks.clear()
        self.refresh()
        self._notify_parent()

    def targets(self) -> list[Hashable]:
        """Marked rows, else the row under the cursor."""
        if self.marks:
            return [k for k in self.visible_keys() if k in self.marks] or sorted(self.marks)
        key = self.cursor_key
        return [] if key is None else [key]

    # -- rendering --------------------------------------------------------------------

    def on_mount(self) -> None:
        self.watch(self.app, "theme", self._theme_changed, init=True)
        self.set_interval(0.5, self._expire_changes)

    def _theme_changed(self, _theme: str) -> None:
        variables = self.app.get_css_variables()
        self._styles = {}
        for name, value in variables.items():
            if name.startswith("state-"):
                try:
                    self._styles[name[6:]] = Style.parse(value)
                except Exception:
                    pass
        for sev in ("warning", "error"):
            if sev in variables and sev not in self._styles:
                self._styles[sev] = Style.parse(variables[sev])
        self.refresh()

    def _expire_changes(self) -> None:
        if not self.changed:
            return
        now = self.clock()
        expired = [k for k, (until, _) in self.changed.items() if until <= now]
        for key in expired:
            del self.changed[key]
            self._refresh_key(key)

    def on_click(self, event) -> None:
        """A click puts the cursor on that row (enter then opens what was clicked)."""
        if event.y < 1:
            return
        index = self.scroll_offset.y + event.y - 1
        if 0 <= index < len(self._order):
            self.cursor = index

    def on_resize(self) -> None:
        self._scroll_cursor_into_view()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def _cells(self, values: tuple, now: float) -> list[str]:
        out = []
        for col, value in zip(self.columns, values):
            if value is None or value == "":
                text = "-"
            elif col.fmt is not None:
                text = col.fmt(value, now)
            else:
                text = str(value)
            out.append(text.translate(_CONTROL_PICTURES))
        return out

    def render_lines(self, crop):
        # Styles are looked up once per frame, not once per line (rich_style and
        # component styles rebuild Style objects on every call).
        self._frame = self._frame_styles()
        return super().render_lines(crop)

    def _frame_styles(self) -> dict[str, Style]:
        base = self.rich_style
        cursor = base + self.get_component_rich_style(
            "linetable--cursor" if self.has_focus else "linetable--cursor-blurred")
        return {"base": base, "header": self.get_component_rich_style("linetable--header"),
                "cursor": cursor,
                "marked": self.get_component_rich_style("linetable--marked"),
                "changed": self.get_component_rich_style("linetable--changed"),
                "accent": self.get_component_rich_style("linetable--accent"),
                "stale": self.get_component_rich_style("linetable--stale")}

    def _widths(self, width: int) -> list[int]:
        """Each column's width: the last one takes what the others leave (a long
        message uses a wide terminal), never less than its own width."""
        widths = [c.width for c in self.columns]
        if widths:
            widths[-1] = max(widths[-1], width - (self._width - widths[-1]))
        return widths

    def render_line(self, y: int) -> Strip:
        frame = getattr(self, "_frame", None) or self._frame_styles()
        width = self.size.width
        scroll_x = self.scroll_offset.x
        base = frame["base"]
        widths = self._widths(width)
        if y == 0:
            header = frame["header"]
            segs = [Segment(" ", header)]
            for col, w in zip(self.columns, widths):
                label = col.label.upper()
                if col.key == self.sort_column:
                    label += "↓" if self.sort_reverse else "↑"
                segs.append(Segment(_fit(label, w) + " ", header))
            strip = Strip(segs).crop(scroll_x, scroll_x + width)
            return strip.extend_cell_length(width, header)
        index = self.scroll_offset.y + y - 1
        key = self.key_at(index)
        if key is None:
            return Strip.blank(width, base)
        row = self.rows[key]
        now = self.clock()
        is_cursor = index == self.cursor
        style = frame["cursor"] if is_cursor else base
        marked = key in self.marks
        if self.row_style is not None and not is_cursor:
            extra = self.row_style(row)
            if extra:
                style = style + frame[extra]
        if marked:
            style = style + frame["marked"]
        changed = self.changed.get(key)
        changed_cols = changed[1] if changed and changed[0] > now else frozenset()
        segs = []
        for i, (col, w, text) in enumerate(zip(self.columns, widths,
                                               self._cells(row.values, now))):
            cell = style
            if col.styled and not is_cursor:
                extra = self._styles.get(str(row.values[i]))
                if extra is not None:
                    cell = cell + extra
            if i in changed_cols:
                cell = cell + frame["changed"]
            if i == 0:
                flag = None if marked or self.row_flag is None else self.row_flag(row)
                segs.append(Segment("●", style) if marked else
                            Segment(flag, style + frame["marked"]) if flag else
                            Segment(" ", style))
            segs.append(Segment(_fit(text, w), cell))
            segs.append(Segment(" ", style))
        strip = Strip(segs).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, style)


#: Control characters drawn as their Unicode pictures: a newline in a command or an
#: escape sequence in a hostname must not break the line or reach the terminal.
_CONTROL_PICTURES = {**{c: 0x2400 + c for c in range(32)}, 0x0A: 0x2424, 0x7F: 0x2421}


def _fit(text: str, width: int) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.ljust(width)
