"""Real QEMU BIOS boots to the hold script: fleet serve vs dnsmasq's proxyDHCP.

    python tests/bench/bench_qemu_boot.py [--runs 3] [--timeout 120]

As root. The site of the testbed (support.fixtures.SiteTopology): namespace
`site` with br0 10.77.0.1 and a tap for QEMU, the site's ordinary dnsmasq
(addresses + RA) in namespace `dhcp`. The machine: QEMU q35 under TCG,
SeaBIOS + the virtio NIC's iPXE ROM (so iPXE asks DHCP itself and goes straight
to the script over HTTP). Measured: QEMU start -> the marker line the script
echoes on the serial console.

- fleet: `fleet --headless serve` in the site namespace (ports 67/4011/69/8080,
  port4011 mode, log level INFO); iPXE gets `http://10.77.0.1:8080/boot/<mac>.ipxe`,
  fleet's hold script (which records the machine in the store).
- dnsmasq: its own proxy mode (`dhcp-range=10.77.0.1,proxy`,
  `dhcp-userclass=set:ipxe,iPXE`, `pxe-service=tag:ipxe,x86PC,...,<URL>`,
  TFTP on) plus an aiohttp static server on 8081 serving a script that echoes
  the same marker.

The two proxies both need port 67, so they run one at a time; runs alternate
(fleet, dnsmasq, dnsmasq, fleet, ...), a fresh MAC per run, the proxy started
before the clock starts. Target (issue 3): fleet median <= 1.2x dnsmasq median.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PY, child_env, fmt, median, require_root, table,  # noqa: E402
                     verdict, wait_for_line)

QEMU = "/usr/bin/qemu-system-x86_64"
ADDR = "10.77.0.1"
MARKER = "fleet: waiting to be leased"
HOLD = f"#!ipxe\necho {MARKER}\nsleep 30\nexit\n"

PROFILE = """\
version: 1
name: benchqemu
store: ./benchqemu.db
sites:
  - name: lab
    subnets: [10.77.0.0/24]
    distributor:
      interface: br0
      address: {addr}
      ports: {{dhcp: 67, pxe: 4011, tftp: 69, http: 8080}}
      proxy_mode: port4011
      poll_seconds: 30
      tftp_root: ./files
deployments:
  - name: tiny
    kind: script
"""

from static_http import STATIC_HTTP  # noqa: E402  (the peer's HTTP server)


class Bench:
    def __init__(self, site, timeout: float):
        self.site = site
        self.topo = site.topo
        self.w = self.topo.workdir
        self.timeout = timeout
        (self.w / "files").mkdir()
        (self.w / "files" / "hold.ipxe").write_text(HOLD)
        self.profile = self.w / "benchqemu.yaml"
        self.profile.write_text(PROFILE.format(addr=ADDR))
        from support.profiles import isolated_env

        self.env = isolated_env(self.w) | {"FLEET_LOG_LEVEL": "INFO"}
        self.env["PYTHONPATH"] = child_env()["PYTHONPATH"]
        site.add_tap("tap0")
        http_log = self.w / "http.log"
        self.http = site.popen(site.site_ns, [PY, "-c", STATIC_HTTP, str(self.w / "files"),
                                              ADDR, "8081"], env=child_env(),
                               stdout=http_log.open("w"), stderr=subprocess.STDOUT)
        wait_for_line(self.http, http_log, "ready", 20)
        self.n = 0

    def start_fleet(self):
        out = self.w / f"serve{self.n}.jsonl"
        err = self.w / f"serve{self.n}.err"
        proc = self.site.popen(self.site.site_ns, [PY, "-m", "fleet", "--headless", "--profile",
                                                   str(self.profile), "serve"], env=self.env,
                               stdout=out.open("w"), stderr=err.open("w"))
        wait_for_line(proc, out, "distributor.started", 30)
        return proc, err

    def start_dnsmasq(self):
        from support.dnsmasq import proxy_dhcp

        d = proxy_dhcp(self.topo, "site", interface="br0", address=ADDR,
                       tftp_root=self.w / "files",
                       ipxe_script=f"http://{ADDR}:8081/hold.ipxe").start()
        return d, d.log

    def boot(self, label: str) -> float | None:
        self.n += 1
        mac = f"52:54:00:77:{0x30 + self.n // 256:02x}:{self.n % 256:02x}"
        if label == "fleet":
            server, log = self.start_fleet()
        else:
            server, log = self.start_dnsmasq()
        time.sleep(0.3)
        serial = self.w / f"{label}{self.n}.serial"
        serial.write_text("")
        argv = [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-nographic",
                "-monitor", "none", "-serial", f"file:{serial}", "-no-reboot",
                "-boot", "order=n,reboot-timeout=0",
                "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
        started = time.monotonic()
        proc = self.site.popen(self.site.site_ns, argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        took = None
        try:
            while True:
                text = serial.read_text(errors="replace")
                if MARKER in text:
                    took = time.monotonic() - started
                    break
                if proc.poll() is not None or time.monotonic() - started > self.timeout:
                    print(f"{label} run {self.n}: no marker (QEMU rc {proc.poll()})\n"
                          f"serial:\n{text[-2500:]}\nserver log:\n"
                          f"{Path(log).read_text(errors='replace')[-2500:]}", file=sys.stderr)
                    break
                time.sleep(0.05)
        finally:
            self.topo.stop(proc, grace=0.5)
            proc.stderr.close()
            if label == "fleet":
                self.topo.stop(server)
            else:
                server.stop()
        return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    require_root()
    for tool in (QEMU, "/usr/lib/ipxe/qemu/efi-virtio.rom"):
        if not Path(tool).exists():
            print(f"missing {tool} (apt-get install qemu-system-x86 ipxe-qemu)", file=sys.stderr)
            return 3
    from support.fixtures import SiteTopology
    from support.netns import install_cleanup_hooks, protect_subnets

    install_cleanup_hooks()
    guards = protect_subnets()
    site = SiteTopology()
    errors = 0
    results: dict[str, list[float]] = {"fleet": [], "dnsmasq": []}
    try:
        bench = Bench(site, args.timeout)
        for run in range(args.runs):
            order = ["fleet", "dnsmasq"] if run % 2 == 0 else ["dnsmasq", "fleet"]
            for label in order:
                took = bench.boot(label)
                if took is None:
                    errors += 1
                    continue
                results[label].append(took)
                print(f"  run {run + 1} {label:8s} {took:6.2f} s to the script", flush=True)
    finally:
        site.close()
        from support.netns import unprotect_subnets
        unprotect_subnets(guards)
    f, d = median(results["fleet"]), median(results["dnsmasq"])
    print()
    table(["server", "seconds per run", "median s", "vs dnsmasq"],
          [["fleet serve", " ".join(fmt(x, ".2f") for x in results["fleet"]), fmt(f, ".2f"),
            fmt(f / d, ".2f") + "x"],
           ["dnsmasq proxy + static HTTP", " ".join(fmt(x, ".2f") for x in results["dnsmasq"]),
            fmt(d, ".2f"), "1.00x"]],
          title=f"QEMU BIOS (SeaBIOS + virtio iPXE ROM, TCG) to the script's marker, "
                f"{args.runs} runs each, interleaved")
    print(f"fleet <= 1.2x dnsmasq: {f / d:.2f}x  {verdict(f / d <= 1.2)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
