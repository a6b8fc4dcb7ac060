"""Console at scale: 10,000 machines + 10,000 nodes in a real store, 200 changes a
second written by another process (as `fleet --headless serve` would).

Prints: load time (app start -> the first screen: the visible rows of both big
panes and the totals, from LIMIT queries), the time until all 20,000 rows are held
(filter, sort and scrolling over everything), keypress-to-screen latency
(p50/p95 of `down` until the table repaints the cursor row), the change feed's
refresh rate, and idle CPU (share of one core, median of three 5 s windows with
nothing changing).
Targets: load < 0.5 s, p95 < 50 ms, idle CPU < 3 %.

    .venv/bin/python tests/bench/bench_tui.py            # or: pytest tests/bench/bench_tui.py -s
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

N_MACHINES = 10_000
N_NODES = 10_000
RATE = 200  # changes per second from the writer process
MACHINE_SHARE = 0.9  # the rest are node reachability changes


def _mac(i: int) -> str:
    return "02:00:" + ":".join(f"{(i >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


async def build_store(folder: Path) -> None:
    from fleet.core import lifecycle as lc
    from fleet.core.arch import FirmwareArch
    from fleet.core.model import Node
    from fleet.engine import Engine
    from tui.seed import paths_in
    from support.profiles import write_profile

    engine = await Engine.open(write_profile(folder, "bench"), paths=paths_in(folder))
    now = time.time()
    archs = [FirmwareArch.UEFI_X64, FirmwareArch.BIOS, FirmwareArch.UEFI_ARM64]
    async with engine.store.transaction() as tx:
        for i in range(N_MACHINES):
            t = lc.discover(_mac(i), now - i, arch=archs[i % 3], nic_vendor="Bench NIC",
                            distributor="rack1" if i % 2 else "rack2")
            await engine.store.machines.save(tx, t.machine)
        for i in range(N_NODES):
            await engine.store.nodes.save(tx, Node(
                name=f"n{i:05d}", site="rack1" if i % 2 else "rack2",
                address=f"10.{91 + i % 2}.{(i // 250) % 250}.{i % 250 + 1}",
                labels={"role": ("web", "db", "cache")[i % 3]}, source="callhome"))
    await engine.close()


async def writer(folder: Path, seconds: float) -> None:
    """Another process: RATE changes/s (lease/release pairs and reachability flips)."""
    from fleet.core.model import Reachability
    from fleet.engine import Engine
    from tui.seed import paths_in

    engine = await Engine.open(folder / "bench.yaml", paths=paths_in(folder))
    tick = 0.05
    per_tick = int(RATE * tick)
    leased: set[str] = set()
    i = 0
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        for _ in range(per_tick):
            i += 1
            if (i % 10) < MACHINE_SHARE * 10:
                mac = _mac(i * 7919 % N_MACHINES)
                if mac in leased:
                    await engine.release(mac)
                    leased.discard(mac)
                else:
                    await engine.lease(mac, "debian12")
                    leased.add(mac)
            else:
                name = f"n{i * 104729 % N_NODES:05d}"
                state = Reachability.REACHABLE if i % 3 else Reachability.UNREACHABLE
                async with engine.store.transaction() as tx:
                    await engine.store.nodes.set_reachability(tx, name, state, time.time())
                    await engine.store.events.append(tx, [engine.event(
                        "node.reachability", name, f"{name} {state.value}")])
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await engine.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run_bench(folder: Path) -> dict:
    from fleet.profile import load_profile
    from fleet.tui.app import FleetApp
    from tui.seed import paths_in

    app = FleetApp(load_profile(folder / "bench.yaml"), paths=paths_in(folder), blink=False)
    out: dict = {}
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        machines = app.pane("machines").table
        nodes = app.pane("nodes").table
        while not (len(machines.rows) >= N_MACHINES and len(nodes.rows) >= N_NODES
                   and app.refresh_count >= 1):
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["load_s"] = time.perf_counter() - t0
        marks = app.timings
        # the first screen: the first frame painted with the visible rows and the
        # totals (the whole lists follow)
        out["first_screen_s"] = marks.get("first_paint", time.perf_counter()) - t0
        out["phases"] = {k: marks[k] - t0 for k in ("engine", "mount", "first_screen",
                                                      "first_paint", "machines_fetched",
                                                      "machines_shown", "nodes_fetched",
                                                      "nodes_shown")
                         if k in marks}

        # a writer in another process, sharing the store
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--writer", str(folder), "12")
        await asyncio.sleep(1.5)
        painted: list[float] = []
        original = machines.render_line

        def render_line(y: int):
            strip = original(y)
            if y == machines.cursor - machines.scroll_offset.y + 1:
                painted.append(time.perf_counter())
            return strip

        machines.render_line = render_line
        machines.focus()
        await pilot.pause()
        latencies = []
        refresh_before = app.refresh_count
        t_start = time.perf_counter()
        for n in range(120):
            painted.clear()
            start = time.perf_counter()
            await pilot.press("down" if (n // 30) % 2 == 0 else "up")
            while not painted and time.perf_counter() - start < 1.0:
                await asyncio.sleep(0.001)
            latencies.append(((painted[0] if painted else time.perf_counter()) - start) * 1000)
            await asyncio.sleep(0.04)
        out["refreshes_per_s"] = (app.refresh_count - refresh_before) / (
            time.perf_counter() - t_start)
        out["p50_ms"] = statistics.median(latencies)
        out["p95_ms"] = pct(latencies, 0.95)
        out["rows_updated_ok"] = sum(1 for r in machines.rows.values()
                                     if r.fields.get("state") == "leased")
        await proc.wait()
        machines.render_line = original

        await asyncio.sleep(2.0)  # let the last refreshes drain
        # three 5 s windows: the 30 s reconcile (a full re-read of 20,000 rows, ~0.4 s
        # of CPU) lands in some of them; print the median and the worst
        windows = []
        for _ in range(3):
            c0, w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(5.0)
            windows.append(100 * (time.process_time() - c0) / (time.perf_counter() - w0))
        out["idle_cpu_pct"] = statistics.median(windows)
        out["idle_cpu_max_pct"] = max(windows)
    return out


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("TZ", "UTC")
        t = time.perf_counter()
        asyncio.run(build_store(folder))
        print(f"store: {N_MACHINES} machines + {N_NODES} nodes written in "
              f"{time.perf_counter() - t:.1f} s")
        r = asyncio.run(run_bench(folder))
    print(f"load (app start -> first screen painted: visible rows + totals): "
          f"{r['first_screen_s']:.3f} s"
          "   target < 0.5 s")
    print(f"all rows (app start -> 10k+10k rows held: filter/sort/scroll on all): "
          f"{r['load_s']:.3f} s")
    print("  phases since start: " + ", ".join(f"{k} {v:.3f}" for k, v in r["phases"].items()))
    print(f"keypress -> repaint under {RATE} changes/s: p50 {r['p50_ms']:.1f} ms, "
          f"p95 {r['p95_ms']:.1f} ms   target p95 < 50 ms")
    print(f"feed refreshes during the run: {r['refreshes_per_s']:.1f}/s (<= 4/s by design); "
          f"leased rows seen: {r['rows_updated_ok']}")
    print(f"idle CPU: {r['idle_cpu_pct']:.2f} % of a core (median of 3 x 5 s; worst "
          f"{r['idle_cpu_max_pct']:.2f} %)   target < 3 %")
    return r


def test_bench_tui():
    r = main()
    assert r["rows_updated_ok"] > 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        asyncio.run(writer(Path(sys.argv[2]), float(sys.argv[3])))
    else:
        main()
