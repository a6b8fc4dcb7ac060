"""A simulated machine always stops when cancelled, even when the cancel arrives
together with a power-cycle: Python 3.11's asyncio.wait_for returned the result
and dropped such a cancel, and the machine (and the demo's stop) ran on."""

from __future__ import annotations

import asyncio

import pytest

from fleet.sim.machine import SimMachine
from fleet.sim.vendors import make_hardware


async def test_a_cancel_that_coincides_with_a_reboot_is_not_lost():
    import random

    hw = make_hardware(random.Random(1), 0, set())
    machine = SimMachine(index=0, hw=hw, ip="127.0.0.9", site=None)
    sleeping = asyncio.ensure_future(machine._sleep(60))
    await asyncio.sleep(0)  # asleep, waiting for a power-cycle
    machine.request_reboot()
    sleeping.cancel()  # the reboot and the stop in the same moment
    with pytest.raises(asyncio.CancelledError):
        await sleeping
