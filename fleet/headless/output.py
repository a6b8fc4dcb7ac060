"""Printing records as a table (people), a JSON array, or JSON lines (scripts).

Records are flat dicts with stable field names; the table shows a chosen subset
of columns with humane times, JSON shows every field with ISO 8601 UTC times.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Iterable, Sequence, TextIO

if TYPE_CHECKING:
    from fleet.engine import Engine


FORMATS = ("table", "json", "jsonl")


class Output:
    """`stream`/`errors`: where records and `fleet: ...` lines go (default stdout
    and stderr; a running fleet's control server passes its client's streams)."""

    def __init__(self, fmt: str = "table", stream: TextIO | None = None,
                 errors: TextIO | None = None):
        self.format = fmt
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr

    def records(self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
                *, empty: str = "nothing to show") -> None:
        """`columns`: (field, heading) pairs shown in table format."""
        if self.format == "json":
            self._write(json.dumps([_public(r) for r in rows], indent=2, default=str) + "\n")
        elif self.format == "jsonl":
            for row in rows:
                self.record_line(row)
        else:
            if not rows:
                self._write(f"({empty})\n")
                return
            self._write(render_table(rows, columns))

    def record(self, row: dict[str, Any], text: str) -> None:
        """One result: the object in JSON formats, a sentence in table format."""
        if self.format == "table":
            self._write(text + "\n")
        elif self.format == "json":
            self._write(json.dumps(_public(row), indent=2, default=str) + "\n")
        else:
            self.record_line(row)

    def record_line(self, row: dict[str, Any]) -> None:
        self._write(json.dumps(_public(row), default=str, separators=(",", ":")) + "\n")

    def text(self, line: str) -> None:
        self._write(line + "\n")

    def error(self, line: str) -> None:
        """One line for people on the error stream (`fleet: ...`)."""
        self.errors.write(line + "\n")
        self.errors.flush()

    def _write(self, s: str) -> None:
        self.stream.write(s)
        self.stream.flush()


async def warn_stale(engine: "Engine", out: Output) -> None:
    """A remote site that is away: the rows just printed are its last known ones;
    say so, a line each, on the command's error stream."""
    if engine.remote is not None:
        for line in await engine.remote.stale():
            out.error(f"fleet: {line}")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """Fields starting with '_' are table-only renderings; JSON leaves them out."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def render_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[heading.upper() for _, heading in columns]]
    for row in rows:
        cells.append([_cell(row.get(field)) for field, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
