"""Build benchmark: ISO cold vs cached, and 20 concurrent builds.

    python tests/bench/bench_build.py [--rounds N]

Runs in a throw-away XDG tree (nothing of yours is touched). Prints:
- cold ISO build (a job: grub-mkstandalone, mtools, xorriso, verification)
- cached ISO request (content address hit: no job), target < 50 ms
- the same request through the CLI (`fleet --headless build iso`), process
  start included, against running `xorriso` alone for scale
- 20 concurrent requests (10 identical, 10 different) from two engines sharing
  the cache, with the build group's limit (2) respected
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for support.profiles

from support.profiles import isolated_env, write_profile  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def bench(rounds: int) -> int:
    from fleet.engine import Engine

    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-build."))
    env = isolated_env(tmp)
    os.environ.update({k: v for k, v in env.items() if k.startswith("XDG_")})
    profile = write_profile(tmp)
    engine = await Engine.open(profile)
    ok = True
    try:
        cold = []
        for i in range(rounds):
            t = time.perf_counter()
            o = await engine.builds.build("iso", label=f"COLD{i}", distributor="rack1")
            cold.append(time.perf_counter() - t)
            assert not o.cached
        cached = []
        for i in range(rounds * 10):
            t = time.perf_counter()
            o = await engine.builds.build("iso", label="COLD0", distributor="rack1")
            cached.append(time.perf_counter() - t)
            assert o.cached and o.job_id is None
        size = o.artifact.size
        print(f"ISO ({size / 1e6:.1f} MB), {rounds} cold builds / {len(cached)} cached requests")
        print(f"  cold build (job)       median {ms(statistics.median(cold))}  "
              f"min {ms(min(cold))}")
        med = statistics.median(cached)
        print(f"  cached (no job)        median {ms(med)}  p95 "
              f"{ms(sorted(cached)[int(len(cached) * 0.95) - 1])}  "
              f"target < 50 ms: {'ok' if med < 0.05 else 'MISSED'}")
        print(f"  cold / cached          {statistics.median(cold) / med:8.0f}x")
        ok &= med < 0.05

        fleet = str(Path(sys.executable).with_name("fleet"))
        cli = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([fleet, "--headless", "-p", str(profile), "build", "iso", "--label",
                            "COLD0", "--distributor", "rack1"], env=env, check=True,
                           capture_output=True)
            cli.append(time.perf_counter() - t)
        iso_path = Path(o.artifact.path)
        xo = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(["xorriso", "-indev", str(iso_path), "-report_el_torito", "plain"],
                           check=True, capture_output=True)
            xo.append(time.perf_counter() - t)
        print(f"  CLI cached (process)   median {ms(statistics.median(cli))}   "
              f"(for scale: one `xorriso -report_el_torito` {ms(statistics.median(xo))})")

        other = await Engine.open(profile)
        try:
            def requests(eng, tag):
                reqs = [eng.builds.build("iso", label="SAME20", distributor="rack1")
                        for _ in range(5)]
                reqs += [eng.builds.build("iso", label=f"{tag}{i}", distributor="rack1")
                         for i in range(5)]
                return reqs
            t = time.perf_counter()
            outcomes = await asyncio.gather(*requests(engine, "P"), *requests(other, "Q"))
            took = time.perf_counter() - t
        finally:
            await other.close()
        ids = {x.artifact.id for x in outcomes}
        peak = engine.jobs.runner.active_peak.get("build", 0)
        print(f"20 concurrent requests (10 identical, 10 different; 2 engines, 1 cache): "
              f"{took:.2f} s, {len(ids)} artifacts, build-group peak {peak} (limit 2)")
        ok &= len(ids) == 11 and peak <= 2
        per_iso = statistics.median(cold)
        print(f"  vs 11 cold builds one after another (estimate): {11 * per_iso:.2f} s")
    finally:
        await engine.close()
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    return asyncio.run(bench(args.rounds))


if __name__ == "__main__":
    sys.exit(main())
