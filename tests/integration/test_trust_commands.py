"""`fleet --headless trust list` and `trust forget NODE`, through the real CLI,
against asyncssh servers on loopback (support/ssh_lab.py): a node whose pinned
key no longer matches is refused with a message that names the command, and
after `trust forget` (from another process) the running engine trusts the
node's new key again (accept-new pins it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncssh
import pytest

from fleet.access.pool import PoolOptions
from fleet.access.routes import OperatorIPv6
from fleet.core.model import HostKey
from fleet.engine import Engine
from support.ssh_lab import SshLab


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = SshLab(tmp_path)
    await lab.start_jump("j1")
    await lab.start_node("n01", "127.0.0.11")
    lab.write_known_hosts(tmp_path / "known_hosts", skip=("n01",))
    profile = lab.write_profile({
        "operator": {"ssh": {"known_hosts": ["./known_hosts"], "host_keys": "accept-new",
                             "connect_timeout": 2.0}},
        "sites": [{"name": "lo", "jumps": ["j1"]}]})
    yield lab, profile
    await lab.close()


def fleet(xdg, profile, *args):
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=xdg, capture_output=True, text=True,
                          timeout=60)


async def test_trust_list_and_forget_through_the_cli(lab, xdg):
    lab, profile = lab
    engine = await Engine.open(profile, pool_options=PoolOptions(keepalive_interval=1),
                               operator6=OperatorIPv6())
    try:
        old = asyncssh.generate_private_key("ssh-ed25519")
        kind, body = old.export_public_key().decode().split()[:2]
        old_fp = old.get_fingerprint("sha256")
        async with engine.store.transaction() as tx:
            await engine.store.nodes.pin_keys(tx, "n01", [HostKey(kind, body, old_fp,
                                                                  "callhome", 1.0)])
        node = await engine.node("n01")
        report = await engine.access.exec([node], "hostname")
        error = report.results[0].error
        assert report.results[0].error_kind == "host-key"
        assert "CHANGED" in error and "fleet --headless trust forget n01" in error

        proc = fleet(xdg, profile, "--format", "json", "trust", "list")
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)
        assert [(r["name"], r["kind"], r["fingerprint"], r["source"]) for r in rows] == [
            ("n01", "node", old_fp, "callhome")]
        assert old_fp in fleet(xdg, profile, "trust", "list").stdout

        proc = fleet(xdg, profile, "trust", "forget", "n01")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"forgot 1 pinned host key of n01: {kind} {old_fp}"
        assert (await engine.node("n01")).host_keys == ()
        forgotten = [e for e in await engine.events(50) if e.kind == "hostkey.forgotten"]
        assert forgotten and forgotten[-1].subject == "n01"

        # the running engine followed the event: the node's key is new to it, so
        # accept-new takes and pins it
        async def answers():
            r = (await engine.access.exec([await engine.node("n01")], "hostname")).results[0]
            return r if r.error_kind == "ok" else None

        for _ in range(20):
            if await answers():
                break
            await asyncio.sleep(0.2)
        assert await answers(), "n01 still refused after trust forget"
        real_fp = lab.host_key("n01").get_fingerprint("sha256")
        assert [k.fingerprint for k in (await engine.node("n01")).host_keys] == [real_fp]

        proc = fleet(xdg, profile, "trust", "forget", "n01")
        assert proc.returncode == 0 and real_fp in proc.stdout
        proc = fleet(xdg, profile, "trust", "forget", "n01")
        assert proc.stdout.strip() == "n01 has no pinned host keys; nothing changed"
        proc = fleet(xdg, profile, "trust", "forget", "nosuch")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == "fleet: unknown node or jump 'nosuch'"
        proc = fleet(xdg, profile, "--read-only", "trust", "forget", "n01")
        assert proc.returncode == 2 and "read-only" in proc.stderr
    finally:
        await engine.close()
