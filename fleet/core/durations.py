"""Human durations as operators write them: "7m1s", "2h5m", "3d4h"."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    s = int(round(max(seconds, 0)))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{s}s" if s else f"{minutes}m"
    return f"{s}s"
