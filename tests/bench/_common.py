"""Shared helpers for the root benchmarks in tests/bench (not a test module).

Each bench is run as `python tests/bench/bench_X.py` as root. They build their
own namespaces with `support.netns.Topology` (test subnets routed unreachable
in the root namespace, everything removed at exit), run fleet and its peer in
the same run, interleaved, and print tables with medians and ratios. A missed
target is printed ("target missed"), not an error: the exit code is non-zero
only when something failed to run.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TESTS = HERE.parents[1]
REPO = HERE.parents[2]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # for `support.*`

PY = sys.executable


def require_root() -> None:
    if os.geteuid() != 0:
        print(f"{Path(sys.argv[0]).name}: needs root (network namespaces)", file=sys.stderr)
        sys.exit(3)


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def percentile(xs, p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no data."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def fmt(x, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def table(headers: list[str], rows: list[list], *, title: str | None = None) -> str:
    """A plain aligned text table (also valid-ish Markdown with the pipes)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(title)
    for n, r in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def wait_for_line(proc: subprocess.Popen, path: Path, needle: str, timeout: float) -> None:
    """Wait until `needle` shows in the file `path` written by `proc`."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode} before {needle!r}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {needle!r} after {timeout}s:\n{text[-3000:]}")
        time.sleep(0.05)


def child_env() -> dict[str, str]:
    """Environment for Python children: tests/ and the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    return env


def py_spy() -> str:
    import shutil

    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def print_top(path: Path, n: int = 12, *, inclusive: tuple[str, ...] = ()) -> None:
    """Top leaf functions of a py-spy `--format raw` profile; `inclusive`:
    substrings of frames whose inclusive share is printed too."""
    if not path.exists():
        print("  (no profile)")
        return
    own: dict[str, int] = {}
    incl: dict[str, int] = {k: 0 for k in inclusive}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        for k in inclusive:
            if k in stack:
                incl[k] += c
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + c
    for leaf, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        print(f"  {100 * c / total:5.1f}%  {leaf}")
    for k, c in incl.items():
        print(f"  {100 * c / max(total, 1):5.1f}%  inclusive: frames matching {k!r}")
