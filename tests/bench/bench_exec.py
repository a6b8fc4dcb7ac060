"""Fan-out benchmark: `true` on 200 nodes behind one jump, fleet vs OpenSSH peers;
then 1000 nodes of which half are unreachable. Root (real sshds in namespaces).

    sudo .venv/bin/python tests/bench/bench_exec.py [--nodes 200] [--rounds 3]
                                                   [--skip-1000] [--only-1000]

Part 1 (median of --rounds; every OpenSSH run forces -o KexAlgorithms=curve25519-sha256):
  fleet cold         `python -m fleet --headless exec --select all --parallel N -- true`,
                     a fresh process: interpreter, imports, store, jump + N tunnelled
                     connections
  fleet warm         one process, connections held (AccessAPI.exec again)
  ssh -J xargs       `xargs -P50 ssh -J root@gw1 root@NODE true`
  ssh jump master    a ControlMaster to the jump; `ssh -o ProxyCommand='ssh -S M -W %h:%p'`
  ssh node masters   per-node ControlMasters opened first (not timed), then
                     `ssh -S NODE_MASTER true` via xargs -P50 (warm)
  parallel-ssh       Debian's `parallel-ssh -p 50 -x '-J root@gw1 ...'`
fleet cold and the jump master run in alternating rounds (the box's speed drifts
within minutes); their round-by-round ratios are printed too.
Targets: fleet cold <= 0.6x the best cold peer; fleet warm <= 0.5x node masters warm.

Part 2: 1000 nodes: 500 reachable (the N sshds on port 22 plus more sshds on port
2222 of the same addresses: several sshds per address, one per port) and 500
unreachable (the 20 nft-dropped addresses 10.91.0.230-249 x 25 ports each: a
dropped SYN never answers whatever the port, so no sshd is needed). Profile
connect_timeout 2 s; all 1000 must be classified (ok / unreachable) with every
unreachable one at most connect_timeout + 1 s after the run starts. Run with
the pool's defaults (1024 open slots per jump, each given back after 0.2 s if
the open is unanswered); with --compare-old also with the old setting (128
slots held until the open is answered or times out: 500 blackholed opens
queued in ~4 waves of connect_timeout).

--control: only `exec true` from a fresh CLI while `fleet --headless serve` runs on
the profile (the CLI sends it through the serve's control socket: its held
connections), vs the in-process warm figure, vs OpenSSH through a ControlMaster
on the jump; rounds alternate the three. Targets: <= 1.2x warm, <= 0.3x the
ControlMaster.

Read the ratios, not the seconds: the 2-core box is shared with the sshds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for support.*

from support.fixtures import SshFleet, SshFleetTopology  # noqa: E402
from support.keys import KeyStore  # noqa: E402
from support.netns import (acquire_testbed_lock, cleanup_all, install_cleanup_hooks,  # noqa: E402
                           make_workdir, protect_subnets, sweep_stale, unprotect_subnets)
from support.profiles import isolated_env  # noqa: E402

KEX = ("-o", "KexAlgorithms=curve25519-sha256")
JUMP = "root@10.90.0.2"


def write_profile(path: Path, fleet: SshFleet, nodes: list[tuple[str, str, int]],
                  connect_timeout: float = 5) -> Path:
    lines = ["version: 1", "name: bench", f"store: {path.parent / 'bench.db'}", "operator:",
             "  ssh:", "    user: root", f"    identity: {fleet.client_key}",
             f"    known_hosts: [{fleet.known_hosts}]", "    host_keys: strict",
             f"    connect_timeout: {connect_timeout}", "jumps:",
             "  - {name: gw1, address: 10.90.0.2}", "sites:",
             "  - {name: rack1, subnets: [10.91.0.0/24], jumps: [gw1]}", "nodes:"]
    for name, address, port in nodes:
        lines.append(f"  - {{name: {name}, address: {address}, port: {port}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


SERVER_PIDS: list[int] = []  # the node and jump sshd listeners (set by main)


def server_cpu() -> float:
    """CPU seconds of the sshd listeners and of the sessions they reaped: the
    servers' side of every connection that has ended."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in SERVER_PIDS:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


class Timer:
    """Wall and client CPU of a run; `server`: the sshds' CPU for connections that
    ended within it (cold runs; a held connection's sessions are not reaped yet)."""

    def __enter__(self):
        self.v0 = server_cpu()
        self.t0 = time.monotonic()
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.s0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (c1.ru_utime - self.c0.ru_utime + c1.ru_stime - self.c0.ru_stime
                    + time.process_time() - self.s0)
        time.sleep(0.3)  # the listeners reap the last sessions (not timed)
        self.server = server_cpu() - self.v0


def _served_seconds(log_text: str) -> list[float]:
    """From serve's log: seconds from each `control: exec for pid N` line to its
    `... exited` line (the log's millisecond timestamps)."""
    import datetime

    started: dict[str, float] = {}
    took = []
    for m in re.finditer(r"^(\S+ \S+) INFO fleet\.control: control: exec for pid (\d+)"
                         r"( exited)?", log_text, re.M):
        t = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m[3]:
            took.append(t - started.pop(m[2]))
        else:
            started[m[2]] = t
    return took


def sh(cmd: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env,
                          timeout=timeout)


def q(s) -> str:
    import shlex
    return shlex.quote(str(s))


class Bench:
    def __init__(self, fleet: SshFleet, work: Path, rounds: int, n: int):
        self.fleet = fleet
        self.work = work
        self.rounds = rounds
        self.n = n
        self.nodes = fleet.nodes[:n]
        self.hosts = work / "hosts"
        self.hosts.write_text("".join(s.address + "\n" for s in self.nodes))
        self.ssh = f"/usr/bin/ssh -F {q(fleet.ssh_config)} {' '.join(KEX)}"
        self.results: dict[str, tuple[float, float, int]] = {}
        self.server: dict[str, float] = {}  # cold runs: the sshds' CPU (median)
        self.pair_ratios: list[float] = []  # fleet cold / jump master, side by side

    def record(self, name: str, runs: list[tuple]) -> None:
        """runs: (wall, client cpu, ok[, sshd cpu]) per round."""
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        ok = min(r[2] for r in runs)
        server = statistics.median(r[3] for r in runs) if all(len(r) > 3 for r in runs) \
            else None
        self.results[name] = (wall, cpu, ok)
        if server is not None and "warm" in name:
            server = None  # held connections: their sessions are not reaped yet
        if server is not None:
            self.server[name] = server
        sshd = f"  sshd cpu {server:5.2f}s" if server is not None else ""
        print(f"  {name:<22} {wall:7.2f}s  cpu {cpu:6.2f}s{sshd}  ok {ok}/{self.n}  "
              f"(runs: {', '.join(f'{r[0]:.2f}' for r in runs)})", flush=True)

    def xargs(self, per_host: str) -> tuple[float, float, int, float]:
        cmd = (f"xargs -P50 -I{{}} /bin/sh -c {q(per_host + ' && echo OK')} < {q(self.hosts)}")
        with Timer() as t:
            cp = sh(cmd)
        return t.wall, t.cpu, cp.stdout.count("OK"), t.server

    # -- fleet ------------------------------------------------------------------------
    def cold_pair(self, profile: Path) -> None:
        """fleet cold and the usual best peer (OpenSSH with a ControlMaster on the
        jump) in alternating rounds, each pair in alternating order: this box's
        speed drifts by tens of percent within minutes (steal), so only runs made
        side by side compare. Prints each pair's ratio."""
        # fleet's bytecode compiled first, as an installed fleet has it (pip compiles
        # a wheel's modules; asyncssh's were compiled when pip installed it): with
        # PYTHONDONTWRITEBYTECODE set, an editable checkout would compile fleet's
        # modules again in every cold run (~0.14 s here)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "fleet")],
                       check=True, capture_output=True)
        env = isolated_env(self.work / "cold")
        argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "exec",
                "--select", "all", "--parallel", str(self.n), "-o", "jsonl", "--", "true"]

        def fleet_once() -> tuple:
            with Timer() as t:
                cp = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
            return t.wall, t.cpu, cp.stdout.count('"error_kind":"ok"'), t.server

        sock = self.work / "jm.sock"
        cp = sh(f"{self.ssh} -o ControlMaster=yes -o ControlPath={q(sock)} "
                f"-o ControlPersist=600 -N -f {JUMP}")
        assert cp.returncode == 0, cp.stderr
        proxy = f"ProxyCommand={self.ssh} -o ControlPath={sock} -W %h:%p {JUMP}"
        fleet_runs, peer_runs = [], []

        def fleet_turn() -> None:
            fleet_runs.append(fleet_once())

        def peer_turn() -> None:
            peer_runs.append(self.xargs(f"{self.ssh} -o {q(proxy)} root@{{}} true"))

        try:
            for i in range(self.rounds):
                for turn in ((fleet_turn, peer_turn) if i % 2 == 0 else (peer_turn, fleet_turn)):
                    turn()
        finally:
            sh(f"{self.ssh} -o ControlPath={q(sock)} -O exit {JUMP}")
        self.record("fleet cold (CLI)", fleet_runs)
        self.record("ssh, jump master", peer_runs)
        self.pair_ratios = [f[0] / p[0] for f, p in zip(fleet_runs, peer_runs)]
        print("  fleet cold / jump master, round by round: "
              + ", ".join(f"{r:.2f}" for r in self.pair_ratios), flush=True)

    def fleet_cold_caps(self, profile: Path, caps: list[int]) -> None:
        """Cold in one process (a fresh engine and pool each round), for several
        values of PoolOptions.handshakes_per_jump: where the cold time goes."""
        from fleet.access.pool import PoolOptions

        async def go(cap: int):
            from fleet.engine import Engine

            t0 = time.monotonic()
            engine = await Engine.open(profile, pool_options=PoolOptions(
                handshakes_per_jump=cap))
            print(f"    (Engine.open: {time.monotonic() - t0:.2f}s)", flush=True)
            try:
                nodes = await engine.access.targets(select="all")
                with Timer() as t:
                    r = await engine.access.exec(nodes, "true", parallel=self.n)
                return t.wall, t.cpu, len(r.results) - len(r.failed)
            finally:
                t0 = time.monotonic()
                await engine.close()
                print(f"    (engine.close with {self.n} pooled connections: "
                      f"{time.monotonic() - t0:.2f}s)", flush=True)

        env = isolated_env(self.work / "caps")
        os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                               "XDG_STATE_HOME", "XDG_CACHE_HOME")})
        for cap in caps:
            self.record(f"fleet cold in-proc hs{cap}",
                        [asyncio.run(go(cap)) for _ in range(self.rounds)])

    def fleet_warm(self, profile: Path) -> None:
        async def go():
            from fleet.engine import Engine

            engine = await Engine.open(profile)
            try:
                api = engine.access
                nodes = await api.targets(select="all")
                first = await api.exec(nodes, "true", parallel=self.n)
                assert not first.failed, first.failed[:3]
                runs = []
                for _ in range(self.rounds):
                    with Timer() as t:
                        r = await api.exec(nodes, "true", parallel=self.n)
                    runs.append((t.wall, t.cpu, len(r.results) - len(r.failed)))
                return runs
            finally:
                await engine.close()

        env = isolated_env(self.work / "warm")
        os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                               "XDG_STATE_HOME", "XDG_CACHE_HOME")})
        self.record("fleet warm (held)", asyncio.run(go()))

    def control_trio(self, profile: Path) -> None:
        """`exec true` from a fresh CLI process while `fleet --headless serve` runs
        on the profile (through its control socket: the serve's held connections),
        the in-process warm figure (an engine of this process holding its own),
        and OpenSSH through a ControlMaster on the jump: rounds alternate the
        three, the order rotating each round; ratios per round."""
        env = isolated_env(self.work / "control")
        for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
                  "XDG_RUNTIME_DIR"):
            os.environ[k] = env[k]
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "fleet")],
                       check=True, capture_output=True)
        argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "exec",
                "--select", "all", "--parallel", str(self.n), "-o", "jsonl", "--", "true"]
        sock = self.work / "jm-control.sock"
        proxy = f"ProxyCommand={self.ssh} -o ControlPath={sock} -W %h:%p {JUMP}"
        runs: dict[str, list[tuple]] = {"control": [], "warm": [], "master": []}

        def cli() -> tuple:
            with Timer() as t:
                cp = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
            return t.wall, t.cpu, cp.stdout.count('"error_kind":"ok"')

        async def go():
            from fleet.engine import Engine

            serve = subprocess.Popen([sys.executable, "-m", "fleet", "--headless", "--profile",
                                      str(profile), "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=serve_log.open("w"))
            engine = await Engine.open(profile)
            try:
                for _ in range(100):
                    if "fleet.control: control socket" in serve_log.read_text():
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"serve has no control socket: "
                                         f"{serve_log.read_text()}")
                api = engine.access
                nodes = await api.targets(select="all")
                first = await api.exec(nodes, "true", parallel=self.n)  # warm this one
                assert not first.failed, first.failed[:3]
                warmup = await asyncio.to_thread(cli)  # and the serve's pool
                print(f"  (first CLI exec through the socket, connecting: "
                      f"{warmup[0]:.2f}s, ok {warmup[2]})", flush=True)
                cp = sh(f"{self.ssh} -o ControlMaster=yes -o ControlPath={q(sock)} "
                        f"-o ControlPersist=600 -N -f {JUMP}")
                assert cp.returncode == 0, cp.stderr

                async def warm() -> tuple:
                    with Timer() as t:
                        r = await api.exec(nodes, "true", parallel=self.n)
                    return t.wall, t.cpu, len(r.results) - len(r.failed)

                async def master() -> tuple:
                    return await asyncio.to_thread(
                        self.xargs, f"{self.ssh} -o {q(proxy)} root@{{}} true")

                turns = {"control": lambda: asyncio.to_thread(cli), "warm": warm,
                         "master": master}
                order = list(turns)
                for i in range(self.rounds):
                    for name in order[i % 3:] + order[:i % 3]:
                        runs[name].append(await turns[name]())
            finally:
                sh(f"{self.ssh} -o ControlPath={q(sock)} -O exit {JUMP}")
                await engine.close()
                serve.send_signal(signal.SIGTERM)
                serve.wait(30)

        serve_log = self.work / "control-serve.log"
        asyncio.run(go())
        log_text = serve_log.read_text()
        served = len(re.findall(r"control: exec for pid \d+ exited", log_text))
        assert served == self.rounds + 1, f"{served} execs went through the socket"
        inside = _served_seconds(log_text)[1:]  # the serve's own time per timed exec
        self.record("fleet CLI via serve", runs["control"])
        self.record("fleet warm (in-proc)", runs["warm"])
        self.record("ssh, jump master ", runs["master"])
        to_warm = [c[0] / w[0] for c, w in zip(runs["control"], runs["warm"])]
        to_cm = [c[0] / m[0] for c, m in zip(runs["control"], runs["master"])]
        m_warm, m_cm = statistics.median(to_warm), statistics.median(to_cm)
        print(f"\n  CLI via a running serve / in-process warm, round by round: "
              f"{', '.join(f'{x:.2f}' for x in to_warm)}; median {m_warm:.2f} "
              f"(target <= 1.2): {'MET' if m_warm <= 1.2 else 'NOT MET'}")
        over = [c[0] - i for c, i in zip(runs["control"], inside)]
        print(f"  of the CLI's time, the serve ran the exec (request taken up to exit "
              f"sent) for a median {statistics.median(inside):.2f}s; the rest (a fresh "
              f"process, the exchange) {statistics.median(over):.2f}s "
              f"(rounds: {', '.join(f'{x:.2f}' for x in over)})")
        print(f"  CLI via a running serve / OpenSSH jump ControlMaster, round by round: "
              f"{', '.join(f'{x:.2f}' for x in to_cm)}; median {m_cm:.2f} "
              f"(target <= 0.3): {'MET' if m_cm <= 0.3 else 'NOT MET'}", flush=True)

    # -- OpenSSH peers ---------------------------------------------------------------
    def ssh_j(self) -> None:
        runs = [self.xargs(f"{self.ssh} -J {JUMP} root@{{}} true") for _ in range(self.rounds)]
        self.record("ssh -J, xargs -P50", runs)

    def node_masters(self) -> None:
        d = self.work / "cm"
        d.mkdir(exist_ok=True)
        path = f"{d}/%h"
        t0 = time.monotonic()
        sh(f"xargs -P50 -I{{}} {self.ssh} -J {JUMP} -o ControlMaster=yes "
            f"-o ControlPath={path} -o ControlPersist=600 -N -f root@{{}} < {q(self.hosts)}")
        opened = time.monotonic() - t0
        masters = len(list(d.iterdir()))
        print(f"  ({masters} node masters opened in {opened:.1f}s, not timed)", flush=True)
        try:
            self.xargs(f"{self.ssh} -o ControlPath={path} root@{{}} true")  # warm-up
            runs = [self.xargs(f"{self.ssh} -o ControlPath={path} root@{{}} true")
                    for _ in range(self.rounds)]
            self.record("ssh node masters warm", runs)
        finally:
            sh(f"xargs -P50 -I{{}} {self.ssh} -o ControlPath={path} -O exit root@{{}} "
               f"< {q(self.hosts)}")

    def pssh(self) -> None:
        extra = f"-F {self.fleet.ssh_config} -J {JUMP} {' '.join(KEX)}"
        runs = []
        for _ in range(self.rounds):
            with Timer() as t:
                cp = sh(f"parallel-ssh -h {q(self.hosts)} -p 50 -l root -t 120 "
                        f"-x {q(extra)} true")
            runs.append((t.wall, t.cpu, cp.stdout.count("[SUCCESS]"), t.server))
        self.record("parallel-ssh -p50", runs)

    def table(self) -> None:
        r = self.results
        peers = {k: v for k, v in r.items() if not k.startswith("fleet")}
        cold_peers = {k: v for k, v in peers.items() if "warm" not in k}
        if not cold_peers:
            return
        best_name, best = min(cold_peers.items(), key=lambda kv: kv[1][0])
        print(f"\n{self.n} nodes behind one jump, `true` (median of {self.rounds}):")
        print(f"  {'method':<24}{'wall':>8}{'cpu':>8}{'ok':>6}  vs best cold peer ({best_name})")
        for name, (wall, cpu, ok) in r.items():
            print(f"  {name:<24}{wall:7.2f}s{cpu:7.2f}s{ok:>6}  {wall / best[0]:.2f}x")
        cold = r["fleet cold (CLI)"][0] / best[0]
        warm_ref = r.get("ssh node masters warm")
        print(f"\n  fleet cold / best cold peer = {cold:.2f}  (target <= 0.6): "
              f"{'MET' if cold <= 0.6 else 'NOT MET'}")
        if self.pair_ratios:
            print(f"  fleet cold / jump master in side-by-side rounds: median "
                  f"{statistics.median(self.pair_ratios):.2f} "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in self.pair_ratios)})")
        server = self.server.get("fleet cold (CLI)")
        if server is not None:
            cores = os.cpu_count() or 1
            floor = server / cores
            print(f"  the sshds' own CPU in fleet's cold run: {server:.2f}s (best peer's run: "
                  f"{self.server.get(best_name, float('nan')):.2f}s); on {cores} cores "
                  f"shared with them, a client using no CPU at all would take >= "
                  f"{floor:.2f}s = {floor / best[0]:.2f}x")
        if warm_ref:
            warm = r["fleet warm (held)"][0] / warm_ref[0]
            print(f"  fleet warm / node masters warm = {warm:.2f}  (target <= 0.5): "
                  f"{'MET' if warm <= 0.5 else 'NOT MET'}")


def part_1000(fleet: SshFleet, work: Path, n_base: int, compare_old: bool = False,
              variants: tuple[str, ...] = ()) -> None:
    from fleet.access.pool import PoolOptions

    base = fleet.nodes[:n_base]
    extra_needed = 500 - len(base)
    # more sshds on port 2222 (then 2223...) of the same addresses
    specs_by_port: dict[int, list] = {}
    port = 2222
    while extra_needed > 0:
        take = base[:extra_needed]
        specs_by_port[port] = [("nodes", f"{s.name}p{port}", s.address) for s in take]
        extra_needed -= len(take)
        port += 1
    extra = []
    t0 = time.monotonic()
    for port, specs in specs_by_port.items():
        extra += fleet.farm.start(specs, port=port)
    fleet._write_client_files()
    print(f"\n{len(extra)} more sshds on ports {sorted(specs_by_port)} in "
          f"{time.monotonic() - t0:.1f}s", flush=True)
    reachable = [(s.name, s.address, s.port) for s in base + extra]
    dropped = [(f"gone{a}p{p}", f"10.91.0.{a}", p) for a in range(230, 250)
               for p in range(2200, 2225)]
    assert len(reachable) == 500 and len(dropped) == 500
    ct = 2.0
    profile = write_profile(work / "b1000.yaml", fleet, reachable + dropped, connect_timeout=ct)
    env = isolated_env(work / "b1000")
    os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                           "XDG_STATE_HOME", "XDG_CACHE_HOME")})

    async def go(options: PoolOptions, label: str):
        from fleet.engine import Engine

        engine = await Engine.open(profile, pool_options=options)
        try:
            api = engine.access
            nodes = await api.targets(select="all")
            t0 = time.monotonic()
            finished: dict[str, float] = {}
            rep = await api.exec(nodes, "true", parallel=1000,
                                 on_result=lambda r: finished.setdefault(
                                     r.node, time.monotonic() - t0))
            wall = time.monotonic() - t0
            kinds = rep.counts()
            gone = [finished[n] for n, _, _ in dropped]
            ok = [finished[n] for n, _, _ in reachable]
            wrong = [r for r in rep.results if (r.node.startswith("gone")) != (
                r.error_kind == "unreachable")]
            print(f"  {label:<34} wall {wall:5.2f}s  ok {kinds['ok']}  unreachable "
                  f"{kinds['unreachable']}  misclassified {len(wrong)}  last unreachable "
                  f"at {max(gone):.2f}s  last ok at {max(ok):.2f}s  -> "
                  f"{'MET' if max(gone) <= ct + 1 and not wrong else 'NOT MET'} "
                  f"(unreachable within connect_timeout {ct:g}s + 1s)", flush=True)
            if wrong:
                print("    e.g.", [(r.node, r.error_kind, r.error) for r in wrong[:3]])
        finally:
            await engine.close()

    print(f"1000 nodes (500 reachable, 500 dropped), connect_timeout {ct:g}s, parallel 1000:")
    d = PoolOptions()
    asyncio.run(go(d, f"pool defaults (opens {d.opens_per_jump}, hold {d.open_slot_hold:g}s)"))
    if compare_old:  # before: 128 slots, each held until answered or timed out
        asyncio.run(go(PoolOptions(opens_per_jump=128, open_slot_hold=ct),
                       "old: opens 128 held to timeout"))
    for v in variants:  # HANDSHAKES_PER_JUMP:OPENS_PER_JUMP:OPEN_SLOT_HOLD
        hs, opens, hold = v.split(":")
        asyncio.run(go(PoolOptions(handshakes_per_jump=int(hs), opens_per_jump=int(opens),
                                   open_slot_hold=float(hold)),
                       f"hs {hs}, opens {opens}, hold {hold}s"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-1000", action="store_true")
    ap.add_argument("--only-1000", action="store_true")
    ap.add_argument("--variants", default="", metavar="HS:OPENS:HOLD,...",
                    help="part 2 also with these PoolOptions (handshakes_per_jump, "
                         "opens_per_jump, open_slot_hold)")
    ap.add_argument("--compare-old", action="store_true",
                    help="part 2 also with the old pool setting (128 open slots per jump, "
                         "each held until its open is answered or times out)")
    ap.add_argument("--cold-caps", metavar="K,K", default="",
                    help="also time cold exec in one process with handshakes_per_jump=K")
    ap.add_argument("--control", action="store_true",
                    help="only the control-socket rows: the CLI while a serve runs vs "
                         "in-process warm vs OpenSSH's jump ControlMaster, alternating")
    ap.add_argument("--only-caps", action="store_true",
                    help="with --cold-caps: only those rows")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_exec: needs root (network namespaces, sshd)", file=sys.stderr)
        return 3
    acquire_testbed_lock()
    install_cleanup_hooks()
    sweep_stale()
    subnets = protect_subnets()
    workdir = make_workdir("bench-exec")
    topo = None
    try:
        keys = KeyStore(workdir / "keys")
        topo = SshFleetTopology()
        t0 = time.monotonic()
        fleet = SshFleet(topo, keys).start(args.nodes, jumps=("gw1",))
        SERVER_PIDS[:] = [s.proc.pid for s in [*fleet.nodes, *fleet.jumps.values()]]
        print(f"{args.nodes} node sshds + gw1 up in {time.monotonic() - t0:.1f}s", flush=True)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
        if not args.only_1000:
            profile = write_profile(work / "bench.yaml", fleet,
                                    [(s.name, s.address, s.port) for s in fleet.nodes])
            b = Bench(fleet, work, args.rounds, args.nodes)
            print("part 1:", flush=True)
            caps = [int(c) for c in args.cold_caps.split(",") if c]
            if caps:
                b.fleet_cold_caps(profile, caps)
            if args.only_caps:
                return 0
            if args.control:
                b.control_trio(profile)
                return 0
            b.cold_pair(profile)
            b.fleet_warm(profile)
            b.ssh_j()
            b.node_masters()
            b.pssh()
            b.table()
        if not args.skip_1000:
            part_1000(fleet, work, args.nodes, args.compare_old,
                      tuple(v for v in args.variants.split(",") if v))
        fleet.close()
    finally:
        if topo is not None:
            topo.close()
        cleanup_all()
        unprotect_subnets(subnets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
