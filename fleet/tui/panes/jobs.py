from __future__ import annotations

from typing import Hashable

from fleet import records
from fleet.core.durations import format_duration
from fleet.core.model import Job
from fleet.tui.panes.base import Pane
from fleet.tui.widgets.linetable import Column


def bar(progress: float, _now: float = 0.0, width: int = 10) -> str:
    p = max(0.0, min(float(progress or 0.0), 1.0))
    full = int(p * width)
    return "█" * full + "░" * (width - full) + f" {int(p * 100):>3}%"


def duration(job_times: tuple, now: float) -> str:
    started, finished = job_times
    if not started:
        return "-"
    return format_duration((finished or now) - started)


class JobsPane(Pane):
    """Builds and other jobs, newest first."""

    kind = "jobs"
    title = "Builds & jobs"
    number = 3
    COLUMNS = [
        Column("id", "Id", 5),
        Column("kind", "Kind", 9),
        Column("state", "State", 11, styled=True),
        Column("progress", "Progress", 15, fmt=bar),
        Column("phase", "Phase", 14),
        Column("duration", "Took", 7, fmt=duration, dynamic=True),
    ]
    SORT = "id"
    REVERSE = True

    def row(self, j: Job):
        values = (j.id, j.kind, j.state.value, j.progress, j.phase or None,
                  (j.started_at, j.finished_at))
        return j.id, values, {"state": j.state.value, "kind": j.kind}

    async def record(self, key: Hashable) -> tuple[str, dict]:
        job = await self.fleet.engine.find_job(int(key))
        return f"job {key}", records.job(job, self.clock()) if job else {"id": key}
