"""GET /metrics on the boot HTTP service: a real Prometheus (the Debian package
scripts/test installs) scrapes it on loopback and its query API returns what
fleet counted; the exposition itself, parsed by the official client's parser,
carries machines by state, leases, provisioning durations, DHCP/TFTP/HTTP
counts, jobs and SSH pool connections."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.core import lifecycle as lc
from fleet.engine import Engine
from support.boot_site import free_ports, write_boot_site
from support.pxe_client import ClientSpec, boot, random_mac

PROMETHEUS = "/usr/bin/prometheus"


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def site_engine(tmp_path, xdg):
    site = write_boot_site(tmp_path)
    engine = await Engine.open(site.path)
    await engine.boot.start_services()
    yield site, engine
    await engine.close()


async def _scrape(site) -> dict[tuple, float]:
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"http://{site.address}:{site.http}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


async def test_metrics_count_machines_leases_boot_traffic_and_jobs(site_engine):
    site, engine = site_engine
    macs = [random_mac() for _ in range(3)]
    for mac in macs:
        r = await boot(ClientSpec(mac, "bios"), server=site.address, **site.ports)
        assert r.tftp is not None
    await engine.flush_sightings()
    leased, provisioned = macs[0], macs[1]
    await engine.lease(leased, "debian12", "web1")
    await engine.lease(provisioned, "debian12", "web2")
    await engine.advance(provisioned, lc.InstallStarted())
    await engine.advance(provisioned, lc.CallHome())
    r = await httpx.AsyncClient(trust_env=False).get(
        f"http://{site.address}:{site.http}/no/such/path")
    assert r.status_code == 404

    async def hello(ctx, inputs):
        return {"said": "hello"}

    engine.jobs.register("hello", hello)
    job = await engine.jobs.submit("hello", {})
    await engine.jobs.runner.wait(job, timeout=10)

    deadline = time.monotonic() + 5
    while True:  # the machine view and the metrics follow the change feed
        got = await _scrape(site)
        if got.get(("fleet_provisioning_seconds_count", (("deployment", "debian12"),))) == 1:
            break
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.1)
    assert got[("fleet_machines", (("state", "discovered"),))] == 1
    assert got[("fleet_machines", (("state", "leased"),))] == 1
    assert got[("fleet_machines", (("state", "provisioned"),))] == 1
    assert got[("fleet_leases_active", ())] == 2
    site_label = ("site", "rack1")
    assert got[("fleet_dhcp_packets_total", (("outcome", "offers"), site_label))] == 3
    assert got[("fleet_tftp_transfers_total", (site_label,))] == 3
    assert got[("fleet_tftp_errors_total", (("kind", "failed"), site_label))] == 0
    assert got[("fleet_http_requests_total", (("code", "404"), site_label))] == 1
    assert got[("fleet_jobs", (("kind", "hello"), ("state", "succeeded")))] == 1
    assert got[("fleet_ssh_connections", (("kind", "node"),))] == 0
    assert ("fleet_http_errors_total", (site_label,)) not in got or \
        got[("fleet_http_errors_total", (site_label,))] == 0


async def test_a_real_prometheus_scrapes_and_answers_queries(tmp_path, site_engine):
    prometheus = shutil.which("prometheus") or PROMETHEUS
    assert shutil.which(prometheus), (
        "the prometheus binary is missing: scripts/test installs the Debian package")
    site, engine = site_engine
    for _ in range(2):
        await boot(ClientSpec(random_mac(), "uefi"), server=site.address, **site.ports)
    await engine.flush_sightings()

    [port] = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: fleet\n"
        f"    static_configs: [{{targets: ['{site.address}:{site.http}']}}]\n")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            async def value(query: str) -> float | None:
                try:
                    r = await c.get(api, params={"query": query})
                except httpx.TransportError:
                    return None  # not listening yet
                body = r.json()
                assert body["status"] == "success", body
                result = body["data"]["result"]
                return float(result[0]["value"][1]) if result else None

            async def until(query: str, want, timeout: float = 60.0) -> float:
                deadline = time.monotonic() + timeout
                while True:
                    got = await value(query)
                    if got is not None and want(got):
                        return got
                    assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                    assert time.monotonic() < deadline, (query, got)
                    await asyncio.sleep(0.5)

            t0 = time.monotonic()
            assert await until('fleet_machines{state="discovered"}', lambda v: True) == 2
            print(f"Prometheus had scraped fleet after {time.monotonic() - t0:.1f}s")
            assert await value('up{job="fleet"}') == 1
            assert await value('fleet_tftp_transfers_total{site="rack1"}') == 2
            assert await value('fleet_leases_active') == 0
            # its own scrapes: counted from the second one on
            await until('sum(fleet_http_requests_total{code="200"})', lambda v: v >= 1, 15)
    finally:
        proc.terminate()
        proc.wait(10)
