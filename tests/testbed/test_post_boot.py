"""Post-boot scripts run on a new node once it calls home (root testbed).

Real parts: OpenSSH sshd as the node (10.91.0.10, reached through the jump
gw1; the operator cannot route to it directly), the distributor's HTTP
service in-process on 127.0.0.1, the engine on SQLite. The node's host key is
not in any known_hosts file: fleet can reach it only with the key the
call-home pinned.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from fleet.boot.files import BootFiles
from fleet.boot.http import HttpService
from fleet.core.model import JobState
from fleet.engine import Engine
from support.profiles import use_isolated_env, write_profile

pytestmark = [pytest.mark.root]

MAC = "52:54:00:77:00:40"


def _profile(tmp: Path, fleet, scripts: list[Path]) -> Path:
    known = tmp / "jumps_known_hosts"  # the jumps only: the node's key comes by call-home
    known.write_text("".join(j.known_hosts_line() + "\n" for j in fleet.jumps.values()))
    return write_profile(tmp, "pb", "post_boot", {
        "operator": {"ssh": {"identity": str(fleet.client_key), "known_hosts": [str(known)]}},
        "deployments": [{"name": "tiny", "post_boot": [str(s) for s in scripts]}]})


async def test_post_boot_scripts_run_through_the_access_plane_after_callhome(
        ssh_fleet, tmp_path, monkeypatch):
    use_isolated_env(monkeypatch, tmp_path)
    fleet = ssh_fleet(1, jumps=("gw1",))
    (node,) = fleet.nodes
    marker = Path(f"/tmp/fleet-post-boot-{secrets.token_hex(6)}")
    ok = tmp_path / "10-ok.sh"
    ok.write_text(f"#!/bin/sh\nsleep 1\necho \"ran on $(hostname)\" > {marker}\n"
                  "echo configured\n")
    fail = tmp_path / "20-fail.sh"
    fail.write_text("#!/bin/sh\necho cannot >&2\nexit 3\n")
    never = tmp_path / "30-never.sh"
    never.write_text(f"#!/bin/sh\ntouch {marker}.never\n")
    engine = await Engine.open(_profile(tmp_path, fleet, [ok, fail, never]))
    http = HttpService(engine, "rack1", BootFiles(engine.profile, "rack1", system_dirs=()))
    await http.start("127.0.0.1", 0)
    sub = engine.follow()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}",
                                     timeout=10) as client:
            assert (await client.get(f"/boot/{MAC}.ipxe")).status_code == 200
            await engine.flush_sightings()
            machine = await engine.lease(MAC, "tiny", node.name, node.address)
            body = {"token": engine.callhome_token(machine), "hostname": node.name,
                    "host_keys": [node.host_public]}
            t0 = time.monotonic()
            r = await client.post("/api/callhome", json=body)
            answered = time.monotonic() - t0
            assert r.status_code == 200, r.text
            # the answer does not wait for the scripts (the first one alone sleeps 1 s)
            assert answered < 1.0, answered

            async def until(kind: str) -> dict:
                async for e in sub:
                    if e.kind == kind:
                        return e
            failed = await asyncio.wait_for(until("post_boot.failed"), 90)
            # the token is spent: a second call-home is refused and schedules nothing
            again = await client.post("/api/callhome", json=body)
            assert again.status_code == 403

        events = await engine.events(300)
        finished = [e for e in events if e.kind == "post_boot.finished"]
        assert [e.data["script"] for e in finished] == [str(ok)]
        assert finished[0].subject == node.name and finished[0].data["exit"] == 0
        assert finished[0].data["duration_s"] >= 1.0
        assert failed.data["script"] == str(fail) and failed.data["exit"] == 3
        assert failed.data["error_kind"] == "command-failed"
        # the script really ran on the node (its own hostname), the later one never did
        assert marker.read_text().strip() == f"ran on {node.name}"
        assert not Path(f"{marker}.never").exists()

        jobs = [j for j in await engine.jobs.list() if j.kind == "post_boot"]
        assert len(jobs) == 1
        job = jobs[0]
        assert job.state is JobState.FAILED and "20-fail.sh" in job.error
        assert [s["exit"] for s in job.result["scripts"]] == [0, 3]
        log = " ".join(line for _, _, line in await engine.jobs.logs(job.id))
        assert f"{node.name} stdout: configured" in log and "cannot" in log
        # each script went through the access plane as an exec (with its own record)
        execs = [e for e in events if e.kind == "exec.finished"]
        assert len(execs) == 2, [e.message for e in execs]
        print("post-boot events:", json.dumps([e.message for e in finished + [failed]]))
    finally:
        sub.close()
        marker.unlink(missing_ok=True)
        await http.stop()
        await engine.close()
