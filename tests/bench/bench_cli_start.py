"""Cold start of the headless CLI, this checkout against another one (an older
commit in its own venv), in alternating rounds of the same run.

    git worktree add /tmp/fleet-old <commit> && python3 -m venv /tmp/fleet-old/.venv \
        && /tmp/fleet-old/.venv/bin/pip install -e /tmp/fleet-old
    .venv/bin/python tests/bench/bench_cli_start.py --old /tmp/fleet-old/.venv/bin/fleet

Each version gets its own HOME and XDG folders (its own demo store); round 0
warms the caches and creates the stores and is not counted. No root needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

COMMANDS = {"--help": ["--headless", "--help"],
            "machines": ["--headless", "--profile", "demo", "machines"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the other checkout's fleet command")
    parser.add_argument("--new", default=str(Path(".venv/bin/fleet").resolve()))
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    binaries = {"old": args.old, "new": args.new}
    homes = {k: tempfile.mkdtemp(prefix=f"fleet-clistart-{k}-") for k in binaries}
    took: dict[tuple[str, str], list[float]] = {(b, c): [] for b in binaries for c in COMMANDS}
    for r in range(args.rounds + 1):
        for b in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
            h = homes[b]
            env = dict(os.environ, HOME=h, XDG_CONFIG_HOME=f"{h}/c", XDG_DATA_HOME=f"{h}/d",
                       XDG_STATE_HOME=f"{h}/s", XDG_CACHE_HOME=f"{h}/k")
            for name, argv in COMMANDS.items():
                t = time.perf_counter()
                done = subprocess.run([binaries[b], *argv], env=env, capture_output=True)
                elapsed = time.perf_counter() - t
                if done.returncode != 0:
                    raise SystemExit(f"{b} {name} failed: {done.stderr.decode()[-300:]}")
                if r:
                    took[(b, name)].append(elapsed)
    for name in COMMANDS:
        old = statistics.median(took[("old", name)])
        new = statistics.median(took[("new", name)])
        print(f"{name:9s} old {old * 1000:5.0f} ms  new {new * 1000:5.0f} ms  "
              f"new/old {new / old:.2f}  (median of {args.rounds}, alternating)")


if __name__ == "__main__":
    main()
