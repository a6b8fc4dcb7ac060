"""TFTP throughput: fleet's TftpServer vs dnsmasq's TFTP, 64 MiB over a veth pair.

    python tests/bench/bench_tftp.py [--reps 3] [--size-mib 64] [--profile]

As root. Namespaces `srv` (10.77.0.1) and `cli` (10.77.0.2) joined by a veth
pair. In `srv`: fleet's TftpServer (its own Python process, port 1069,
max_windowsize 64) and dnsmasq (`--port=0 --enable-tftp`, port 69), both up the
whole run. In `cli`: one Python process running fleet.sim.tftp_client (the
asyncio client), fetching the same file in interleaved rounds:

  fleet lockstep (blksize 1428) | fleet windowsize 16 (blksize 1428) |
  dnsmasq lockstep (blksize 1428; dnsmasq has no windowsize)

Each transfer is checked against the file's SHA-256. Targets (issue 3):
fleet windowed >= dnsmasq lockstep; fleet lockstep >= 0.5x dnsmasq lockstep.
`--profile` also runs py-spy on the fleet server for one lockstep and one
windowed transfer and prints the top functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PY, child_env, fmt, median, print_top, py_spy, require_root,  # noqa: E402
                     table, verdict, wait_for_line)

SERVER = r"""
import asyncio, sys
from fleet.boot.tftp import TftpServer
async def main():
    srv = TftpServer(root=sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]),
                     max_windowsize=64)
    await srv.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

CLIENT = r"""
import asyncio, json, sys
from fleet.sim.tftp_client import tftp_get
async def main():
    host, port, name, blksize, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
        int(sys.argv[4]), int(sys.argv[5])
    r = await tftp_get(host, port, name, blksize=blksize, tsize=True,
                       windowsize=window if window > 1 else None, keep_data=False, local_host="0.0.0.0",
                       retransmit_timeout=1.0, retries=5)
    print(json.dumps({"seconds": r.seconds, "size": r.size, "sha256": r.sha256,
                      "windowsize": r.windowsize, "blksize": r.blksize,
                      "dups": r.duplicate_packets}))
asyncio.run(main())
"""

FLEET_PORT = 1069
DNSMASQ_PORT = 69
SRV, CLI = "10.77.0.1", "10.77.0.2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--blksize", type=int, default=1428)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--profile", action="store_true", help="py-spy the fleet server")
    args = ap.parse_args()
    require_root()
    from support.netns import SITE, Topology

    topo = Topology("benchtftp", protect=(SITE,))
    errors = 0
    try:
        topo.add_ns("srv")
        topo.add_ns("cli")
        topo.add_veth("srv", "eth0", "cli", "eth0")
        topo.add_addr("srv", "eth0", f"{SRV}/24")
        topo.add_addr("cli", "eth0", f"{CLI}/24")
        root = topo.workdir / "tftp"
        root.mkdir()
        data = os.urandom(args.size_mib * 1024 * 1024)
        (root / "big.bin").write_bytes(data)
        want = hashlib.sha256(data).hexdigest()
        del data
        env = child_env()

        flog = topo.workdir / "fleet.log"
        fleet = topo.popen("srv", [PY, "-c", SERVER, str(root), SRV, str(FLEET_PORT)],
                           env=env, stdout=flog.open("w"), stderr=subprocess.STDOUT)
        wait_for_line(fleet, flog, "ready", 20)
        dlog = topo.workdir / "dnsmasq.log"
        dnsmasq = topo.popen("srv", ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=0",
                                     "--enable-tftp", f"--tftp-root={root}",
                                     f"--listen-address={SRV}", "--bind-interfaces",
                                     "--interface=eth0", "--no-hosts", "--no-resolv",
                                     "--conf-file=/dev/null", "--user=root", "--group=root",
                                     f"--pid-file={topo.workdir / 'dnsmasq.pid'}",
                                     f"--log-facility={dlog}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_line(dnsmasq, dlog, "TFTP root is", 20)

        cases = [("fleet lockstep", FLEET_PORT, 1), (f"fleet windowsize {args.window}",
                                                     FLEET_PORT, args.window),
                 ("dnsmasq lockstep", DNSMASQ_PORT, 1)]
        results: dict[str, list[float]] = {c[0]: [] for c in cases}

        def fetch(port: int, window: int) -> dict:
            cp = topo.run("cli", [PY, "-c", CLIENT, SRV, str(port), "big.bin",
                                  str(args.blksize), str(window)], check=False, timeout=300)
            if cp.returncode != 0:
                raise RuntimeError(cp.stderr[-2000:])
            return json.loads(cp.stdout)

        # warm-up (page cache, imports), every case once, not counted
        for _label, port, window in cases:
            fetch(port, window)
        for rep in range(args.reps):
            order = cases if rep % 2 == 0 else list(reversed(cases))
            for label, port, window in order:
                try:
                    r = fetch(port, window)
                except Exception as exc:
                    print(f"{label} rep {rep + 1}: ERROR {exc}", file=sys.stderr)
                    errors += 1
                    continue
                if r["sha256"] != want or r["size"] != args.size_mib * 1024 * 1024:
                    print(f"{label} rep {rep + 1}: WRONG DATA ({r['size']} bytes)",
                          file=sys.stderr)
                    errors += 1
                    continue
                mibs = args.size_mib / r["seconds"]
                results[label].append(mibs)
                print(f"  rep {rep + 1} {label:24s} {mibs:7.1f} MiB/s "
                      f"({r['seconds']:.2f} s, windowsize {r['windowsize']}, "
                      f"dup {r['dups']})", flush=True)

        base = median(results["dnsmasq lockstep"])
        rows = []
        for label, _, _ in cases:
            m = median(results[label])
            rows.append([label, " ".join(fmt(x) for x in results[label]), fmt(m),
                         fmt(m / base, ".2f") + "x"])
        print()
        table(["server / mode", "MiB/s per rep", "median MiB/s", "vs dnsmasq lockstep"], rows,
              title=f"TFTP {args.size_mib} MiB over veth, blksize {args.blksize}, "
                    f"{args.reps} reps interleaved (fleet.sim.tftp_client in the client ns)")
        lock = median(results["fleet lockstep"]) / base
        win = median(results[f"fleet windowsize {args.window}"]) / base
        print()
        print(f"fleet windowed >= dnsmasq lockstep: {win:.2f}x  {verdict(win >= 1.0)}")
        print(f"fleet lockstep >= 0.5x dnsmasq lockstep: {lock:.2f}x  {verdict(lock >= 0.5)}")

        if args.profile:
            profile_fleet(topo, fleet, fetch, args)
    finally:
        topo.close()
    return 1 if errors else 0


def profile_fleet(topo, fleet: subprocess.Popen, fetch, args) -> None:
    spy = py_spy()
    # the server's Python process is the child of `ip netns exec` (exec'd: same pid)
    pid = fleet.pid
    for label, window in (("lockstep", 1), (f"windowsize {args.window}", args.window)):
        out = topo.workdir / f"spy-{window}.txt"
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw",
                                     "--output", str(out), "--rate", "200", "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        fetch(FLEET_PORT, window)
        spy_proc.send_signal(2)
        spy_proc.wait(30)
        print(f"\npy-spy, fleet server, {label}: top self time")
        print_top(out)


if __name__ == "__main__":
    sys.exit(main())
