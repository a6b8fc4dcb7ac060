"""The console's replica: catch-up after a partition, and the first read of a
replica holding several sites.

    .venv/bin/python tests/bench/bench_replica.py [--events 10000] [--rounds 3]

No root needed: a real `fleet --headless agent` subprocess on pipes serves a
store holding `--events` real lifecycle events (machines discovered, leased,
released through the engine). Each round copies all of them into a fresh
replica file (fleet.sites.replica) and prints events/s, beside the same pages
read from the agent and thrown away, both after a warm-up read (the channel's own rate: what the replica's
writes cost is the difference). Then 5 sites x 2,000 machines are synced into
one replica and read back with last_known, as a console's first frame would
(target under 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, median, table, verdict  # noqa: E402

from support.profiles import isolated_env, write_profile  # noqa: E402
from support.site_agent import AgentChannel, mac_of, write_events  # noqa: E402

from fleet.engine import Engine  # noqa: E402
from fleet.sites.replica import Replica  # noqa: E402


async def read_only_pages(channel: AgentChannel, page_size: int) -> tuple[int, float]:
    """Every event through the channel, nothing kept: (events, seconds)."""
    began = time.monotonic()
    await channel.client.hello("bench")
    after, count = 0, 0
    while True:
        page = await channel.client.call("events_since", after=after, limit=page_size)
        count += len(page["events"])
        after = page["last_id"]
        if not page["more"]:
            return count, time.monotonic() - began


async def catch_up(folder: Path, events: int, rounds: int, page_size: int) -> list[list]:
    env = isolated_env(folder)
    profile = write_profile(folder, "site")
    began = time.monotonic()
    last = await write_events(profile, events)
    print(f"wrote {last} events in {time.monotonic() - began:.1f} s", flush=True)
    rows = []
    for n in range(rounds):
        channel = await AgentChannel.start(profile, env)
        try:
            await read_only_pages(channel, page_size)  # warm the agent's caches first
            async with await Replica.open(folder / f"replica-{n}.db",
                                          page_size=page_size) as replica:
                done = await replica.catch_up("rack1", channel.client)
                assert done.cursor == last and done.events == last
                await replica.refresh("rack1", channel.client)
            count, raw_s = await read_only_pages(channel, page_size)
            assert count == last
        finally:
            await channel.close()
        rows.append([n + 1, done.events, done.pages, done.seconds, done.events / done.seconds,
                     count / raw_s])
    return rows


async def first_frame(folder: Path, sites: int, machines: int) -> tuple[float, int]:
    env = isolated_env(folder)
    path = folder / "replica-sites.db"
    async with await Replica.open(path) as replica:
        for s in range(sites):
            profile = write_profile(folder, f"s{s}")
            async with await Engine.open(profile) as engine:
                for i in range(machines):
                    engine.record_sighting(mac_of(s * machines + i), stage="firmware")
                await engine.flush_sightings()
            channel = await AgentChannel.start(profile, env)
            try:
                await replica.sync(f"site{s}", channel.client, follow=False)
            finally:
                await channel.close()
    began = time.monotonic()  # a console starting: open the file, read every site
    async with await Replica.open(path) as replica:
        seen = 0
        for row in await replica.sites():
            known = await replica.last_known(row.site, events=1000)
            seen += len(known.machines)
    return time.monotonic() - began, seen


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp:
        rows = await catch_up(Path(tmp), args.events, args.rounds, args.page_size)
        table(["round", "events", "pages", "seconds", "events/s", "channel alone events/s"],
              [[r[0], r[1], r[2], fmt(r[3], ".2f"), fmt(r[4], ".0f"), fmt(r[5], ".0f")]
               for r in rows], title=f"catch-up of {args.events} events (page size "
                                     f"{args.page_size})")
        rate = median(r[4] for r in rows)
        print(f"median catch-up: {rate:.0f} events/s, "
              f"{median(r[4] / r[5] for r in rows):.2f}x the channel alone")
        seconds, seen = await first_frame(Path(tmp), 5, 2000)
        print(f"first read of 5 sites x 2000 machines from the replica: {seconds * 1000:.0f} ms "
              f"({seen} machines) - {verdict(seconds < 1.0)} (< 1 s)")


if __name__ == "__main__":
    asyncio.run(main())
