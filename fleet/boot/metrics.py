"""Prometheus metrics of one engine, served as `GET /metrics` by every boot
HTTP service (fleet.boot.http), with the official client (prometheus_client).

Each engine has its own CollectorRegistry (not the client's global one): two
engines in one process, as in the tests, never mix their numbers. What is
counted as it happens (HTTP requests, provisioning durations) lives in
Counter/Histogram objects; what already exists elsewhere (machine states, the
DHCP and TFTP servers' counters, the SSH pool) is read at scrape time by a
collector, so the hot paths gain nothing but a counter increment. Job counts
come from the store, read once per scrape (`refresh`) before rendering.

    fleet_machines{state}                      machines in each lifecycle state
    fleet_leases_active                        machines holding a lease
    fleet_provisioning_seconds{deployment}     lease/install start to call-home
    fleet_dhcp_packets_total{site,outcome}     received, offers, acks, ignored, malformed
    fleet_dhcp_errors_total{site}
    fleet_tftp_requests_total{site}            read requests
    fleet_tftp_transfers_total{site}           completed transfers
    fleet_tftp_errors_total{site,kind}         refused, failed, malformed
    fleet_tftp_sessions{site}                  transfers in progress
    fleet_http_requests_total{site,code}       boot HTTP requests by status
    fleet_http_errors_total{site}              answered 5xx
    fleet_jobs{kind,state}                     jobs in the store
    fleet_ssh_connections{kind}                open pooled SSH connections (node, jump)
    fleet_ssh_connects_total{kind}             SSH connections made
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fleet.core.model import LEASED_STATES, Event, MachineState

if TYPE_CHECKING:
    from fleet.boot.api import BootAPI
    from fleet.engine import Engine

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: an install takes minutes; the demo's take seconds
PROVISIONING_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
_DHCP_OUTCOMES = ("received", "offers", "acks", "ignored", "malformed")
_TFTP_ERRORS = ("refused", "failed", "malformed")


class FleetMetrics:
    def __init__(self, engine: "Engine", boot: "BootAPI"):
        self.engine = engine
        self.boot = boot
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "fleet_http_requests", "Boot HTTP requests answered, by status code",
            ["site", "code"], registry=self.registry)
        self.http_errors = Counter(
            "fleet_http_errors", "Boot HTTP requests answered with a 5xx status",
            ["site"], registry=self.registry)
        self.provisioning = Histogram(
            "fleet_provisioning_seconds",
            "From a machine's lease (or the start of its install) to its call-home",
            ["deployment"], buckets=PROVISIONING_BUCKETS, registry=self.registry)
        self._jobs: dict[tuple[str, str], int] = {}
        self.registry.register(_Snapshot(self))
        self._follow: asyncio.Task | None = None

    # -- as it happens -------------------------------------------------------------

    def http_answered(self, site: str, status: int) -> None:
        self.http_requests.labels(site, str(status)).inc()
        if status >= 500:
            self.http_errors.labels(site).inc()

    def observe(self, event: Event) -> None:
        """A stored event (any process's): provisioning durations."""
        if event.kind == "machine.provisioned":
            duration = event.data.get("duration")
            if isinstance(duration, (int, float)) and duration >= 0:
                self.provisioning.labels(event.data.get("deployment", "")).observe(duration)

    def start(self) -> None:
        """Follow the change feed (idempotent; the boot services start it)."""
        if self._follow is None or self._follow.done():
            self._follow = asyncio.ensure_future(self._run(self.engine.follow()))
            self._follow.set_name("fleet-metrics")

    async def stop(self) -> None:
        task, self._follow = self._follow, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, sub) -> None:
        try:
            async for event in sub:
                self.observe(event)
        finally:
            sub.close()

    # -- at scrape time ------------------------------------------------------------------

    async def refresh(self) -> None:
        """What the store knows and the collector cannot await: job counts."""
        self._jobs = await self.engine.store.jobs.counts()

    async def render(self) -> bytes:
        try:
            await self.refresh()
        except Exception:  # a busy store must not take the other metrics with it
            log.warning("metrics: job counts not read", exc_info=True)
        return generate_latest(self.registry)


class _Snapshot:
    """The numbers other parts keep anyway, read when Prometheus scrapes."""

    def __init__(self, metrics: FleetMetrics):
        self.metrics = metrics

    def collect(self):
        engine = self.metrics.engine
        states = list(engine.machine_states.values())
        machines = GaugeMetricFamily("fleet_machines", "Machines in each lifecycle state",
                                     labels=["state"])
        for state in MachineState:
            machines.add_metric([state.value], sum(1 for s in states if s is state))
        yield machines
        yield GaugeMetricFamily("fleet_leases_active", "Machines holding a lease",
                                value=sum(1 for s in states if s in LEASED_STATES))
        yield from self._boot()
        jobs = GaugeMetricFamily("fleet_jobs", "Jobs in the store by kind and state",
                                 labels=["kind", "state"])
        for (kind, state), n in sorted(self.metrics._jobs.items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        yield from self._ssh(engine)

    def _boot(self):
        dhcp = CounterMetricFamily("fleet_dhcp_packets", "proxyDHCP packets by outcome",
                                   labels=["site", "outcome"])
        dhcp_errors = CounterMetricFamily("fleet_dhcp_errors",
                                          "proxyDHCP errors while answering", labels=["site"])
        requests = CounterMetricFamily("fleet_tftp_requests", "TFTP read requests",
                                       labels=["site"])
        transfers = CounterMetricFamily("fleet_tftp_transfers", "TFTP transfers completed",
                                        labels=["site"])
        tftp_errors = CounterMetricFamily("fleet_tftp_errors",
                                          "TFTP requests refused, transfers failed, "
                                          "malformed packets", labels=["site", "kind"])
        sessions = GaugeMetricFamily("fleet_tftp_sessions", "TFTP transfers in progress",
                                     labels=["site"])
        for site, services in sorted(self.metrics.boot.running().items()):
            if services.proxy is not None:
                stats = services.proxy.stats
                for outcome in _DHCP_OUTCOMES:
                    dhcp.add_metric([site, outcome], stats.get(outcome, 0))
                dhcp_errors.add_metric([site], stats.get("errors", 0))
            if services.tftp is not None:
                stats = services.tftp.stats
                requests.add_metric([site], stats.get("requests", 0))
                transfers.add_metric([site], stats.get("done", 0))
                for kind in _TFTP_ERRORS:
                    tftp_errors.add_metric([site, kind], stats.get(kind, 0))
                sessions.add_metric([site], services.tftp.active_sessions)
        yield from (dhcp, dhcp_errors, requests, transfers, tftp_errors, sessions)

    def _ssh(self, engine):
        access = getattr(engine, "access", None)
        counts = access.pool_counts() if access is not None else {}
        open_ = GaugeMetricFamily("fleet_ssh_connections", "Open pooled SSH connections",
                                  labels=["kind"])
        made = CounterMetricFamily("fleet_ssh_connects", "SSH connections made by the pool",
                                   labels=["kind"])
        for kind in ("node", "jump"):
            open_.add_metric([kind], counts.get(kind, 0))
            made.add_metric([kind], counts.get(f"{kind}_connects", 0))
        yield open_
        yield made
