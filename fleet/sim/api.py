"""Starting the demo site beside fleet's boot services, in the same process.

    demo = await start_demo(engine)   # boot services (if not running) + the simulated site
    demo.status()                     # {"machines", "phases", "discovered", "nodes_up", ...}
    await demo.stop()                 # also done by engine.close()

Both faces call it the same way: `fleet --headless serve` does it when the
profile has a `demo:` section; the console does it at start-up for such a
profile. It is idempotent per engine (a second call returns the running demo).
Raises BadInput when the profile has no `demo:` section, EnvironmentProblem
when a port (boot services, the jump) cannot be bound.
"""

from __future__ import annotations

import logging

from fleet.errors import BadInput, ReadOnly

log = logging.getLogger(__name__)


class Demo:
    def __init__(self, engine, site):
        self.engine = engine
        self.site = site
        self._stopped = False

    @property
    def machines(self):
        return self.site.machines

    def status(self) -> dict:
        return self.site.status()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.site.stop()
        if getattr(self.engine, "_demo", None) is self:
            self.engine._demo = None


async def start_demo(engine, *, start_services: bool = True) -> Demo:
    from fleet.sim.site import DemoSite

    existing = getattr(engine, "_demo", None)
    if existing is not None:
        return existing
    if engine.profile.demo is None:
        raise BadInput(f"profile {engine.profile.name} has no demo: section")
    if engine.read_only:
        raise ReadOnly("the demo site records what it does: it cannot run with --read-only")
    site = DemoSite(engine)
    site.prepare_files()  # before the services start, so the first TFTP finds them
    if start_services:
        await engine.boot.start_services()
    demo = Demo(engine, site)
    await site.start()
    engine._demo = demo
    engine.on_close(demo.stop)  # newest first: the machines stop before the services
    return demo
