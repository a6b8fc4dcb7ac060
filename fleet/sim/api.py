"""Starting the demo site beside fleet's boot services, in the same process.

    await engine.start_site(demo=prepare_demo)   # how both faces start it
    demo = await start_demo(engine)   # boot services (if not running) + the simulated site
    demo.status()                     # {"machines", "phases", "discovered", "nodes_up", ...}
    demo.remote                       # the sites served from afar (agent_site.py)
    await demo.stop()                 # also done by engine.close()

`fleet --headless serve` and the console start it through `Engine.start_site`
when the profile has a `demo:` section. `start_demo` is idempotent per engine
(a second call returns the running demo). The profile's sites with an `agent:`
(the bundled demo's `demo-east`) start after the first site, each as its own
`serve` process with a site host the console reaches through the demo's jump,
and stop with it (fleet.sim.agent_site). Raises BadInput when the profile has
no `demo:` section, EnvironmentProblem when a port (boot services, the jump)
cannot be bound.
"""

from __future__ import annotations

import asyncio
import logging

from typing import TYPE_CHECKING

from fleet.errors import BadInput, ReadOnly

if TYPE_CHECKING:
    from fleet.engine import Engine
    from fleet.sim.site import DemoSite

log = logging.getLogger(__name__)


class Demo:
    def __init__(self, engine: "Engine", site: "DemoSite"):
        from fleet.sim.agent_site import AgentSite, agent_sites

        self.engine = engine
        self.site = site
        self.remote: list[AgentSite] = [AgentSite(engine, s, site.jump_address)
                                        for s in agent_sites(engine)]
        self._stopped = False

    async def start(self) -> None:
        await self.site.start()
        try:
            for remote in self.remote:
                await remote.start()
        except BaseException:
            await self._stop_remote()
            await self.site.stop()
            raise

    @property
    def machines(self):
        return self.site.machines

    def status(self) -> dict:
        return self.site.status()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # at once: the engine gives the whole demo STOP_SECONDS
        await asyncio.gather(self._stop_remote(), self.site.stop())
        if self.engine.demo is self:
            self.engine.demo = None

    async def _stop_remote(self) -> None:
        await asyncio.gather(*(remote.stop() for remote in self.remote),
                             return_exceptions=True)


def prepare_demo(engine: "Engine") -> Demo:
    """The demo of the engine's profile, its files in place, not started
    (Engine.start_site starts it after the boot services)."""
    from fleet.sim.site import DemoSite

    if engine.profile.demo is None:
        raise BadInput(f"profile {engine.profile.name} has no demo: section")
    if engine.read_only:
        raise ReadOnly("the demo site records what it does: it cannot run with --read-only")
    site = DemoSite(engine)
    site.prepare_files()  # before the services start, so the first TFTP finds them
    return Demo(engine, site)


async def start_demo(engine: "Engine", *, start_services: bool = True) -> Demo:
    if engine.demo is not None:
        return engine.demo
    demo = prepare_demo(engine)
    if start_services:
        await engine.boot.start_services()
    await demo.start()
    engine.demo = demo  # the engine stops it first at close
    return demo
