"""A command to a remote site over a slow link: lease (and release) through a
console's held agent channel, against `ssh -J jump site-host fleet --headless
lease ...` (OpenSSH, a new connection and a new interpreter each time), both
over a relay that adds 250 ms each way between the console and the jump.

    .venv/bin/python tests/bench/bench_site_lease.py [--rounds 5] [--delay-ms 250]

Root: sshd switches users. The two alternate round by round (the box's speed
drifts). Target: the held channel costs one round trip plus at most 100 ms,
well under 0.3x the plain ssh.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, median, require_root, table, verdict  # noqa: E402

from support.agent_sshd import agent_command, console_profile, running_sshd  # noqa: E402
from support.profiles import isolated_env, write_profile  # noqa: E402
from support.relay import Relay  # noqa: E402

from fleet.engine import Engine  # noqa: E402
from fleet.sites.hub import SiteHub  # noqa: E402

MAC = "ac:1f:6b:00:00:42"


async def plain_ssh(sshd: dict, relay_port: int, known: Path, env: dict, remote: Path,
                    *args: str) -> float:
    folder = sshd["folder"]
    xdg = " ".join(f"{k}={shlex.quote(env[k])}" for k in
                   ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"))
    remote_cmd = (f"env {xdg} {shlex.quote(sys.executable)} -m fleet --headless --profile "
                  f"{shlex.quote(str(remote))} {' '.join(args)}")
    options = ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-i", str(folder / "operator")]
    jump = " ".join(shlex.quote(o) for o in options)
    command = ["ssh", *options, "-o", f"ProxyCommand=ssh {jump} -W %h:%p -p {relay_port} "
               "root@127.0.0.1", "-p", str(sshd["port"]), "root@127.0.0.1", remote_cmd]
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"plain ssh failed: {err.decode().strip()}")
    return time.monotonic() - began


async def run(tmp: Path, rounds: int, delay: float) -> None:
    env = isolated_env(tmp)
    os.environ.update({k: v for k, v in env.items() if k.startswith("XDG_")})
    (tmp / "site2").mkdir()
    remote = write_profile(tmp / "site2", name="site2")
    async with await Engine.open(remote) as site:
        site.record_sighting(MAC, stage="firmware")
        await site.flush_sightings()
    with running_sshd(tmp / "sshd") as sshd:
        async with Relay(("127.0.0.1", sshd["port"]), delay=delay) as relay:
            host = (sshd["folder"] / "host.pub").read_text().split()
            known = tmp / "known_hosts"
            known.write_text((sshd["folder"] / "known_hosts").read_text()
                             + f"[127.0.0.1]:{relay.address[1]} {host[0]} {host[1]}\n")
            console = console_profile(tmp, sshd, agent_command(env, remote), known_hosts=known,
                                      jump_port=relay.address[1])
            engine = await Engine.open(console, remote=SiteHub)
            try:
                engine.remote.hold()
                while await engine.find_machine(MAC) is None:
                    await asyncio.sleep(0.1)
                rows = []
                for i in range(rounds):
                    began = time.monotonic()
                    await engine.lease(MAC, "debian12", f"b{i}")
                    held = time.monotonic() - began
                    await engine.release(MAC)
                    plain = await plain_ssh(sshd, relay.address[1], known, env, remote,
                                            "lease", MAC, "-d", "debian12", "--hostname",
                                            f"p{i}")
                    await engine.release(MAC)
                    rows.append([i + 1, fmt(held * 1000, ".0f"), fmt(plain * 1000, ".0f"),
                                 fmt(held / plain, ".3f"), held, plain])
            finally:
                await engine.close()
    table(["round", "held channel ms", "plain ssh ms", "ratio"], [r[:4] for r in rows],
          title=f"lease at a remote site, {delay * 1000:.0f} ms each way")
    held, plain = median(r[4] for r in rows), median(r[5] for r in rows)
    print(f"median: held {held * 1000:.0f} ms (one round trip is {2 * delay * 1000:.0f} ms; "
          f"{verdict(held <= 2 * delay + 0.1)} <= RTT + 100 ms), plain ssh {plain * 1000:.0f} ms, "
          f"ratio {held / plain:.3f} ({verdict(held / plain < 0.3)} < 0.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay-ms", type=int, default=250)
    args = parser.parse_args()
    require_root()
    with tempfile.TemporaryDirectory(prefix="bench-site-lease-") as tmp:
        asyncio.run(run(Path(tmp), args.rounds, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
