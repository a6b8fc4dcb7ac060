"""The boot services of every enabled distributor, kept in step with the switch.

Per distributor (one per site with a `distributor:` block): HTTP
(`fleet.boot.http.HttpService`), TFTP (`fleet.boot.tftp.TftpServer` over the
site's `BootFiles`), and proxyDHCP (`fleet.boot.proxydhcp.ProxyDhcpServer`,
ports 67 and 4011), started in that order (proxyDHCP last: it points clients
at the other two) and stopped in reverse.

`BootServices` starts the enabled ones, then follows the change feed:
`distributor.on` / `distributor.off` events (from this process or another one
sharing the store, e.g. `fleet --headless distributor off rack1`) start or stop
that distributor's services, each with a `distributor.started` /
`distributor.stopped` / `distributor.failed` event. A stall watchdog runs
beside them.

Bind failures become `EnvironmentProblem` (exit 3) at start-up with a sentence
naming the service and the port: port in use, permission (ports < 1024),
missing interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from fleet.boot.files import BootFiles
from fleet.boot.proxydhcp import ProxyDhcpServer, describe_os_error
from fleet.boot.tftp import TftpServer
from fleet.boot.watchdog import StallWatchdog
from fleet.core.model import Severity
from fleet.errors import EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)


#: Concurrent TFTP transfers per distributor: a rack powering on asks for the
#: iPXE binary all at once, and a PXE ROM told "busy" gives up (the 500-client
#: bench lost 244 at the old 256). Each session holds one socket; BootAPI raises
#: the soft fd limit to match.
TFTP_SESSIONS = 1024
#: ... of which one client address may hold: a PXE ROM fetches one file at a
#: time, and a host flooding RRQs it never acknowledges must not take them all
TFTP_SESSIONS_PER_CLIENT = 8


class DistributorServices:
    """HTTP + TFTP + proxyDHCP of one site's distributor."""

    def __init__(self, engine: "Engine", site_name: str, *, files: BootFiles | None = None,
                 on_tftp_event=None):
        self.engine = engine
        self.site = site_name
        self.cfg = engine.profile.site(site_name).distributor
        if self.cfg is None:
            raise ValueError(f"site {site_name!r} has no distributor")
        self.files = files or engine.boot.files(site_name)
        self.on_tftp_event = on_tftp_event
        self.http = None
        self.tftp: TftpServer | None = None
        self.proxy: ProxyDhcpServer | None = None

    @property
    def running(self) -> bool:
        return self.proxy is not None

    def ports(self) -> dict[str, int | None]:
        return {
            "dhcp": self.proxy.dhcp_port if self.proxy else None,
            "pxe": self.proxy.pxe_port if self.proxy else None,
            "tftp": self.tftp.port if self.tftp else None,
            "http": self.http.port if self.http else None,
        }

    async def start(self) -> None:
        """Start all three; on failure stop what started and raise EnvironmentProblem."""
        from fleet.boot.http import HttpService

        cfg = self.cfg
        if cfg.interface and cfg.interface not in {n for _, n in socket.if_nameindex()}:
            raise EnvironmentProblem(describe_os_error(
                OSError(errno.ENODEV, os.strerror(errno.ENODEV)), service="proxyDHCP",
                address=cfg.address, port=cfg.ports.dhcp, interface=cfg.interface,
                site=self.site))
        try:
            step = ("HTTP", cfg.ports.http, None)
            self.http = HttpService(self.engine, self.site, self.files)
            await self.http.start(cfg.address, cfg.ports.http)
            step = ("TFTP", cfg.ports.tftp, None)
            self.tftp = TftpServer(resolver=self.files.tftp_resolver(), host=cfg.address,
                                   port=cfg.ports.tftp, on_event=self._tftp_event,
                                   max_sessions=TFTP_SESSIONS,
                                   max_per_client=TFTP_SESSIONS_PER_CLIENT)
            await self.tftp.start()
            self.proxy = ProxyDhcpServer(cfg, self.files, site=self.site,
                                         on_sighting=self.engine.record_sighting,
                                         http_port=self.http.port)
            step = ("proxyDHCP", cfg.ports.dhcp, self.proxy.interface)
            await self.proxy.start()
        except OSError as err:
            await self.stop()
            service = getattr(err, "service", step[0])
            port = getattr(err, "port", step[1])
            interface = getattr(err, "interface", step[2])
            raise EnvironmentProblem(describe_os_error(
                err, service=service, address=cfg.address, port=port,
                interface=interface, site=self.site)) from err
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        proxy, tftp, http = self.proxy, self.tftp, self.http
        self.proxy = self.tftp = self.http = None
        for service in (proxy, tftp, http):
            if service is None:
                continue
            try:
                await service.stop()
            except Exception:
                log.exception("stopping a boot service of %s", self.site)

    def _tftp_event(self, kind: str, **fields: Any) -> None:
        if self.on_tftp_event is not None:
            self.on_tftp_event(self.site, kind, fields)


class BootServices:
    """All distributors' services, following the on/off switch (see module doc)."""

    def __init__(self, engine: "Engine", *, watchdog_interval: float = 5.0,
                 tftp_events_per_second: float = 5.0):
        self.engine = engine
        self.running: dict[str, DistributorServices] = {}
        self.watchdog = StallWatchdog(engine, interval=watchdog_interval)
        self._follow_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._sub = None
        self._lock = asyncio.Lock()
        self._started = False
        self._tftp_budget = _RateLimit(tftp_events_per_second)
        self._background: set[asyncio.Task] = set()

    @property
    def started(self) -> bool:
        return self._started

    def services(self, site: str) -> DistributorServices | None:
        return self.running.get(site)

    async def start(self) -> None:
        """Start every enabled distributor; EnvironmentProblem (nothing left running)
        when one cannot bind."""
        if self._started:
            return
        # Subscribe first: a switch flipped while we start is not lost.
        self._sub = self.engine.follow()
        try:
            async with self._lock:
                for d in await self.engine.distributors():
                    if d.enabled:
                        await self._start_one(d.name, fail_hard=True)
        except BaseException:
            await self._stop_all()
            self._sub.close()
            self._sub = None
            raise
        self._started = True
        self._follow_task = asyncio.ensure_future(self._follow(self._sub))
        self._watch_task = asyncio.ensure_future(self.watchdog.run())

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for task in (self._follow_task, self._watch_task, *self._background):
            if task is not None:
                task.cancel()
        for task in (self._follow_task, self._watch_task, *self._background):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._follow_task = self._watch_task = None
        self._background.clear()
        async with self._lock:
            await self._stop_all(event=True)
        self._started = False

    # -- internals --------------------------------------------------------------------

    async def _start_one(self, site: str, *, fail_hard: bool) -> None:
        if site in self.running:
            return
        services = DistributorServices(self.engine, site, on_tftp_event=self._tftp_event)
        try:
            await services.start()
        except EnvironmentProblem as err:
            if fail_hard:
                raise
            await self._event("distributor.failed", site, str(err), severity=Severity.ERROR)
            return
        self.running[site] = services
        ports = services.ports()
        cfg = services.cfg
        await self._event(
            "distributor.started", site,
            f"distributor {site} serving on {cfg.interface or cfg.address}: proxyDHCP "
            f"{ports['dhcp']}+{ports['pxe']} ({cfg.proxy_mode}), TFTP {ports['tftp']}, "
            f"HTTP {ports['http']}",
            address=cfg.address, interface=cfg.interface, proxy_mode=cfg.proxy_mode, **ports)

    async def _stop_one(self, site: str, *, event: bool = True) -> None:
        services = self.running.pop(site, None)
        if services is None:
            return
        await services.stop()
        if event:
            await self._event("distributor.stopped", site,
                              f"distributor {site} stopped serving")

    async def _stop_all(self, event: bool = False) -> None:
        for site in list(self.running):
            await self._stop_one(site, event=event)

    async def _follow(self, sub) -> None:
        async for e in sub:
            if e.kind not in ("distributor.on", "distributor.off"):
                continue
            try:
                async with self._lock:
                    if e.kind == "distributor.on":
                        await self._start_one(e.subject, fail_hard=False)
                    else:
                        await self._stop_one(e.subject)
            except Exception:
                log.exception("switching distributor %s", e.subject)

    async def _event(self, kind: str, subject: str, message: str, *,
                     severity: Severity = Severity.INFO, **data: Any) -> None:
        log.info("%s", message)
        if self.engine.read_only:
            return
        try:
            await self.engine.record(self.engine.event(kind, subject, message,
                                                       severity=severity, **data))
        except Exception:
            log.exception("recording %s", kind)

    def _tftp_event(self, site: str, kind: str, fields: dict[str, Any]) -> None:
        """TFTP reports: refusals and failures become events (rate-limited, so a
        scan cannot flood the log); finished transfers are logged."""
        client = fields.get("client")
        who = f"{client[0]}:{client[1]}" if client else "?"
        if kind == "transfer-done":
            log.info("tftp %s: sent %s to %s (%s bytes)", site, fields.get("filename"), who,
                     fields.get("bytes"))
            return
        if kind not in ("refused", "transfer-failed"):
            return
        if not self._tftp_budget.allow():
            log.info("tftp %s: %s %s (not recorded: too many)", site, kind, fields)
            return
        name = fields.get("filename")
        reason = fields.get("reason", "")
        if kind == "refused":
            if fields.get("code") == 1:  # file not found
                if name == "autoexec.ipxe":  # iPXE EFI probes it on every boot
                    return
                message = f"TFTP has no {name!r} for {who}"
                ev = "tftp.not-found"
            else:
                message = f"TFTP refused {name!r} to {who}: {reason}"
                ev = "tftp.refused"
        else:
            if fields.get("client_abort"):
                log.info("tftp %s: %s aborted %r (%s)", site, who, name, reason)
                return  # OVMF aborts its first transfer on purpose
            message = f"TFTP transfer of {name!r} to {who} failed: {reason}"
            ev = "tftp.failed"
        data = {"client": who, "filename": name, "reason": reason}
        task = asyncio.ensure_future(self._event(ev, site, message,
                                                 severity=Severity.WARNING, **data))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _RateLimit:
    """A token bucket: `rate` per second, bursts of up to 2x that."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, 2 * rate)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
