"""Property tests through the real store: whatever operators and firmware do,
the stored machines match the pure state machine, no machine is lost, and every
change left its events."""

from __future__ import annotations

import asyncio
import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.core import lifecycle as lc
from fleet.engine import Engine
from fleet.errors import BadInput

from support.profiles import isolated_env, write_profile

MACS = ["00:14:22:00:00:01", "ac:1f:6b:00:00:02", "3c:a8:2a:00:00:03"]

ops = st.one_of(
    st.tuples(st.just("lease"), st.sampled_from(["debian12", "rocky9"]),
              st.sampled_from(["h1", "h2"])),
    st.tuples(st.just("release"), st.booleans()),
    st.tuples(st.just("op"), st.sampled_from([lc.InstallStarted(), lc.CallHome(),
                                              lc.WipeDone(), lc.Fail("disk"),
                                              lc.Stall("slow")])),
    st.tuples(st.just("seen"), st.just(None)),
)

_counter = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(MACS), ops), max_size=30))
def test_engine_and_model_agree(tmp_path_factory, steps):
    folder = tmp_path_factory.mktemp(f"prop{next(_counter)}")
    xdg = {k: v for k, v in isolated_env(folder).items() if k.startswith("XDG_")}
    saved = {k: os.environ.get(k) for k in xdg}
    os.environ.update(xdg)
    try:
        asyncio.run(_check(folder, steps))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _check(folder, steps):
    profile = write_profile(folder)
    engine = await Engine.open(profile)
    try:
        model: dict[str, object] = {}
        for mac in MACS:
            engine.record_sighting(mac, stage="firmware")
        await engine.flush_sightings()
        for mac in MACS:
            model[mac] = await engine.machine(mac)
        events_expected = 3
        for mac, (kind, arg, *rest) in steps:
            before = model[mac]
            try:
                if kind == "lease":
                    after = await engine.lease(mac, arg, rest[0])
                elif kind == "release":
                    after = await engine.release(mac, wipe=arg)
                elif kind == "op":
                    after = (await engine.advance(mac, arg)).machine
                else:
                    engine.record_sighting(mac, stage="ipxe")
                    await engine.flush_sightings()
                    after = await engine.machine(mac)
            except BadInput:
                assert await engine.machine(mac) == before  # refused: nothing changed
                continue
            stored = await engine.machine(mac)
            assert stored.state == after.state and stored.lease == after.lease
            assert lc.is_consistent(stored)
            if stored.state != before.state or stored.lease != before.lease:
                events_expected += 1
            model[mac] = stored
        machines = await engine.machines()
        assert sorted(m.mac for m in machines) == sorted(MACS)  # none lost, none invented
        assert await engine.store.events.max_id() == events_expected
    finally:
        await engine.close()
