"""Link checks between two nodes (plumbr's operators checked their tunnel so).

    fleet --headless link NODE_A NODE_B [--iperf] [--count N] [--seconds S]

- RTT: `ping -c N -q <B's address>` run on A (over A's pooled connection);
  parsed into transmitted/received/loss and min/avg/max/mdev in ms.
- Throughput (with --iperf): when `iperf3` is on both nodes' PATH, a one-shot
  server `iperf3 -s -1 -p PORT` on B, then `iperf3 -c <B> -p PORT -t S -J` on A;
  the record carries sent/received bits per second. When iperf3 is missing on
  either, `iperf` is null and `iperf_skipped` says which node lacks it.

B's address is the one A would use: B's `address` (its private IPv4), else its
public IPv4 or IPv6. One JSON record; event `link.checked`.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from typing import TYPE_CHECKING

from fleet.core.model import Severity

if TYPE_CHECKING:
    from fleet.access.api import AccessAPI

_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received.*?([\d.]+)% packet loss")
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def parse_ping(text: str) -> dict:
    out = {"transmitted": None, "received": None, "loss_pct": None, "rtt_min_ms": None,
           "rtt_avg_ms": None, "rtt_max_ms": None, "rtt_mdev_ms": None}
    m = _LOSS.search(text)
    if m:
        out["transmitted"], out["received"] = int(m.group(1)), int(m.group(2))
        out["loss_pct"] = float(m.group(3))
    m = _RTT.search(text)
    if m:
        for key, value in zip(("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_mdev_ms"),
                              m.groups()):
            out[key] = float(value)
    return out


async def _run(api: "AccessAPI", name: str, command: str, timeout: float):
    async with api.session(name) as link:
        api.commands.add(name, command, via=link.via)  # an ssh.command event
        return await asyncio.wait_for(link.conn.run(command, check=False), timeout)


async def _has(api, name: str, tool: str) -> bool:
    r = await _run(api, name, f"command -v {tool} >/dev/null 2>&1", 15)
    return r.exit_status == 0


async def link_check(api: "AccessAPI", a: str, b: str, *, iperf: bool = False,
                     count: int = 5, seconds: float = 3.0, port: int = 5201) -> dict:
    await api.engine.node(a)  # unknown names are bad input (exit 2) before any SSH
    node_b = await api.engine.node(b)
    address = node_b.address or node_b.public_ipv4 or node_b.ipv6
    rec: dict = {"a": a, "b": b, "address": address, "ok": False, "ping": None,
                 "iperf": None, "iperf_skipped": None, "error": None}
    t0 = time.monotonic()
    if not address:
        rec["error"] = f"{b} has no address"
        return rec
    ping = "ping6" if ":" in address else "ping"
    r = await _run(api, a, f"{ping} -c {int(count)} -q -W 2 {shlex.quote(address)}",
                   count * 3 + 10)
    text = (r.stdout or "") + (r.stderr or "")
    rec["ping"] = parse_ping(text) | {"exit_status": r.exit_status}
    ok = bool(rec["ping"]["received"])
    if not ok:
        rec["error"] = f"ping from {a} to {address}: " + (text.strip().splitlines() or
                                                          ["no output"])[-1]
    if iperf:
        have = {n: await _has(api, n, "iperf3") for n in (a, b)}
        missing = [n for n, h in have.items() if not h]
        if missing:
            rec["iperf_skipped"] = f"iperf3 not installed on {', '.join(missing)}"
        else:
            rec["iperf"], err = await _iperf(api, a, b, address, seconds, port)
            if err:
                ok = False
                rec["error"] = (rec["error"] + "; " if rec["error"] else "") + err
    rec["ok"] = ok
    rec["duration_s"] = round(time.monotonic() - t0, 3)
    engine = api.engine
    if not engine.read_only:
        summary = _summary(rec)
        await engine.record(engine.event("link.checked", f"{a}->{b}", summary,
                                         severity=Severity.INFO if ok else Severity.WARNING,
                                         **{k: v for k, v in rec.items()}))
    return rec


async def _iperf(api, a: str, b: str, address: str, seconds: float,
                 port: int) -> tuple[dict | None, str | None]:
    async with api.session(b) as server_link:
        command = f"exec iperf3 -s -1 -p {int(port)}"
        api.commands.add(b, command, via=server_link.via)
        server = await server_link.conn.create_process(command, encoding="utf-8",
                                                       errors="replace")
        try:
            # iperf3 buffers its "listening" line without a tty: try the client until
            # the server accepts (or has exited)
            data: dict = {}
            for _ in range(40):
                r = await _run(api, a, f"iperf3 -c {shlex.quote(address)} -p {int(port)} "
                                       f"-t {seconds:g} -J", seconds + 20)
                try:
                    data = json.loads(r.stdout)
                except (json.JSONDecodeError, TypeError):
                    return None, f"iperf3 client on {a}: {(r.stderr or r.stdout or '').strip()}"
                error = data.get("error")
                if not error:
                    break
                if "refused" not in error or server.exit_status is not None:
                    break
                await asyncio.sleep(0.25)
            if data.get("error"):
                if server.exit_status is not None:
                    err = (await server.stderr.read()).strip()
                    return None, f"iperf3 server on {b} exited: {err}"
                return None, f"iperf3 client on {a}: {data['error']}"
            end = data.get("end", {})
            sent = end.get("sum_sent", {})
            received = end.get("sum_received", {})
            return {"seconds": seconds, "port": port,
                    "sent_bps": sent.get("bits_per_second"),
                    "received_bps": received.get("bits_per_second"),
                    "retransmits": sent.get("retransmits")}, None
        finally:
            server.close()


def _summary(rec: dict) -> str:
    text = f"{rec['a']} -> {rec['b']} ({rec['address']}): "
    p = rec.get("ping") or {}
    if p.get("received"):
        text += (f"ping {p['received']}/{p['transmitted']} ok, rtt avg {p['rtt_avg_ms']} ms "
                 f"(min {p['rtt_min_ms']}, max {p['rtt_max_ms']})")
    else:
        text += "ping failed"
    if rec.get("iperf"):
        bps = rec["iperf"].get("received_bps") or 0
        text += f"; iperf3 {bps / 1e9:.2f} Gbit/s"
    elif rec.get("iperf_skipped"):
        text += f"; {rec['iperf_skipped']}"
    if rec.get("error"):
        text += f"; {rec['error']}"
    return text
