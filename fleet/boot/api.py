"""`engine.boot`: the boot layer's face to the engine and the two front ends.

    await engine.boot.start_services()   # every enabled distributor (exit 3 on bind errors)
    await engine.boot.stop_services()
    engine.boot.files("rack1")           # BootFiles of a site
    engine.boot.services                 # BootServices (running distributors, stats)
    engine.boot.metrics                  # FleetMetrics: what GET /metrics serves
"""

from __future__ import annotations

import resource
from functools import cached_property
from typing import TYPE_CHECKING

from fleet.boot.files import BootFiles
from fleet.oui import nic_vendor


if TYPE_CHECKING:
    from fleet.boot.metrics import FleetMetrics
    from fleet.engine import Engine


class BootAPI:
    def __init__(self, engine: "Engine"):
        self.engine = engine
        self._services = None
        self._files: dict[str, BootFiles] = {}
        self._started = False

    @property
    def started(self) -> bool:
        """start_services was called and stop_services not since."""
        return self._started

    @property
    def services(self):
        """The BootServices (created on first use; not started)."""
        if self._services is None:
            from fleet.boot.services import BootServices

            self._services = BootServices(self.engine)
        return self._services

    @cached_property
    def metrics(self) -> "FleetMetrics":
        from fleet.boot.metrics import FleetMetrics

        return FleetMetrics(self.engine, self)

    def running(self) -> dict:
        """site -> DistributorServices of the distributors serving now."""
        return {} if self._services is None else dict(self._services.running)

    def files(self, site: str) -> BootFiles:
        if site not in self._files:
            self._files[site] = BootFiles(self.engine.profile, site)
        return self._files[site]

    async def start_services(self) -> None:
        """Start the boot services of every enabled distributor and follow the
        on/off switch. Raises EnvironmentProblem when a port cannot be bound."""
        self._started = True  # a half-started set is stopped too
        _raise_fd_limit(4096)  # a socket per TFTP session
        nic_vendor("00:00:00:00:00:00")  # load netaddr's OUI index now, not on a first DISCOVER
        self.metrics.start()
        await self.services.start()

    async def stop_services(self) -> None:
        self._started = False
        if self._services is not None:
            await self._services.stop()
        if "metrics" in self.__dict__:
            await self.metrics.stop()

    def stats(self) -> dict[str, dict]:
        """Counters per running distributor (proxyDHCP and TFTP)."""
        out = {}
        if self._services is None:
            return out
        for site, s in self._services.running.items():
            out[site] = {"proxydhcp": dict(s.proxy.stats) if s.proxy else {},
                         "tftp": dict(s.tftp.stats) if s.tftp else {},
                         "ports": s.ports()}
        return out


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards `wanted` (never past the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
