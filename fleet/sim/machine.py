"""One simulated machine: firmware, iPXE, installer and installed OS, over real protocols.

The machine does what fleet's answers tell it, nothing more:

1. Firmware PXE: a DISCOVER with the PXE options of its firmware kind (BIOS,
   x64 UEFI, ARM64 UEFI) to the distributor's proxyDHCP, the port-4011
   REQUEST when the offer names no file, a TFTP download of the boot file
   (`fleet.sim.pxe_client`, `fleet.sim.tftp_client`). Retries at 4, 8, 16 s
   like PXE ROMs; with no offer it falls through to the local disk.
2. "iPXE": a second DISCOVER as iPXE (option 175, user class iPXE) whose
   offer names its script URL, then a small iPXE interpreter runs what the
   HTTP service serves: `chain`, `sleep`, `goto`, labels, `echo`, `iseq`,
   `kernel`/`initrd`/`boot`, `sanboot`, `exit`, `reboot`, `||`/`&&`,
   `${var}` and `${var:uristring}` expansion of the machine's settings.
3. Installer (after `boot` of a kernel whose command line names a template
   URL): fetches the rendered template, goes through install phases over
   `install_seconds`, reads the call-home URL, token and authorized keys out
   of the rendered template, generates SSH host keys, and POSTs the call home
   from its own address. Then it reboots (PXE again; fleet says local boot).
4. Installed OS: an asyncssh server (`fleet.sim.node`) on the node's address,
   reachable only through the demo's jump, until the machine is rebooted
   (the demo's stand-in for power control does that when fleet releases it).

A wiper boot (`kernel .../wiper/<id>/vmlinuz ... fleet.report=<url>
fleet.token=<token>`: fleet.boot.wipe) erases the disk and POSTs the report
as the real wiper's /init does (the demo's machines are their own wiper image;
`DemoSite` records stand-in wiper files so fleet has one to offer).

Kernel and initrd are not downloaded: the demo profile's URLs point at files
the demo does not have, and nothing would execute them.

Misbehaviour (`Quirk`), on purpose, for some machines: `slow-firmware` (takes
only proxy offers that arrive at least 50 ms after its DISCOVER: needs the
distributor's `reply_delay_ms`), `stall` (the installer hangs half-way: fleet's
stall watchdog catches it), `rekey` (a reinstall keeps the old host key on
disk, so the key it called home with is not the one its sshd presents: fleet
refuses it as CHANGED), `unreachable` (the node's sshd stops answering a while
after it came up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import asyncssh

from fleet.sim import pxe_client
from fleet.sim.node import NodeOS, NodeServer
from fleet.sim.tftp_client import TftpError, TftpTimeout, tftp_get
from fleet.sim.vendors import FIRMWARE, Hardware

if TYPE_CHECKING:
    from fleet.sim.site import DemoSite

log = logging.getLogger(__name__)

QUIRKS = ("slow-firmware", "stall", "rekey", "unreachable")
SIM_DISK_BYTES = 480 * 10**9  # what the simulated wiper reports clearing
SLOW_FIRMWARE_MIN_DELAY = 0.05
FIRMWARE_WINDOWS = (4.0, 8.0, 16.0)  # seconds a PXE ROM waits per DISCOVER
IPXE_VERSION = "1.21.1+"
MAX_STEPS = 10_000

_TOKEN_RE = re.compile(r'"(\d{1,12}\.[a-z0-9]{8,100})"')
_CALLHOME_RE = re.compile(r"https?://[^\s'\"]+/api/callhome")
_KEY_RE = re.compile(r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) AAAA[A-Za-z0-9+/=]+(?: [^\s'\\]+)?")
_INSTALLING_RE = re.compile(r"installing (\S+) as (\S+)")


class Rebooted(Exception):
    """The machine was power-cycled (a release) while doing something."""


class ScriptError(Exception):
    pass


@dataclass
class Outcome:
    kind: str  # exit | boot | sanboot | reboot
    kernel: str | None = None
    args: tuple[str, ...] = ()


async def http_request(method: str, url: str, *, local: str | None = None,
                       body: bytes | None = None, content_type: str | None = None,
                       timeout: float = 10.0) -> tuple[int, str]:
    """A tiny HTTP/1.1 client (Connection: close) bound to the machine's address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OSError(f"unsupported URL {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    async def go() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(
            parts.hostname, port, local_addr=(local, 0) if local else None)
        try:
            head = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}:{port}",
                    "User-Agent: iPXE/1.21.1+ (fleet demo)", "Connection: close"]
            if body is not None:
                head += [f"Content-Type: {content_type or 'application/octet-stream'}",
                         f"Content-Length: {len(body)}"]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header, _, payload = raw.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise OSError(f"bad HTTP answer from {url}") from None
        if any(l.lower().startswith("transfer-encoding: chunked") for l in lines[1:]):
            payload = _dechunk(payload)
        return status, payload.decode("utf-8", "replace")

    async with asyncio.timeout(timeout):
        return await go()


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


@dataclass
class Disk:
    """What an install left: the OS and its keys."""

    os: NodeOS
    address: str
    reported_key: asyncssh.SSHKey  # the host key the installer called home with


@dataclass
class SimMachine:
    index: int
    hw: Hardware
    ip: str
    site: "DemoSite"
    quirk: str | None = None
    power_on_at: float = 0.0
    disk: Disk | None = None
    installs: int = 0
    phase: str = "off"
    boots: int = 0
    node: NodeServer | None = None
    discovered_at: float | None = None  # first proxy offer taken (monotonic)
    uuid: uuidlib.UUID = field(default_factory=uuidlib.uuid4)
    _reboot: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    last_message: str = ""
    kept_key: asyncssh.SSHKey | None = None  # `rekey`: the key that survives reinstalls

    @property
    def mac(self) -> str:
        return self.hw.mac

    # -- power ---------------------------------------------------------------------

    def request_reboot(self) -> None:
        """Power-cycle (what a BMC would do): whatever it was doing stops."""
        self._reboot.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless the machine is power-cycled meanwhile (then Rebooted).
        asyncio.timeout, not wait_for, here and in the simulated clients: on
        Python 3.11 wait_for drops a cancel that coincides with its result, and a
        machine whose stop was lost that way runs on and keeps the demo from stopping."""
        if self._reboot.is_set():
            raise Rebooted()
        try:
            async with asyncio.timeout(seconds):
                await self._reboot.wait()
        except TimeoutError:
            return
        raise Rebooted()

    async def run(self) -> None:
        try:
            await asyncio.sleep(self.power_on_at)
            while True:
                self._reboot.clear()
                self.boots += 1
                try:
                    await self._boot_once()
                except Rebooted:
                    log.debug("%s power-cycled", self.mac)
                finally:
                    await self._stop_node()
                await asyncio.sleep(self.site.rng.uniform(0.2, 1.0))  # POST
        except asyncio.CancelledError:
            await self._stop_node()
            raise
        except Exception:
            log.exception("simulated machine %s crashed", self.mac)
            self.phase = "crashed"

    async def _stop_node(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            await node.stop()

    # -- one boot --------------------------------------------------------------------

    async def _boot_once(self) -> None:
        self.phase = "firmware"
        fw_kind, ipxe_kind, _, _ = FIRMWARE[self.hw.firmware]
        boot_file = await self._firmware_pxe(fw_kind)
        if boot_file is None:
            self.last_message = "PXE-E51: No DHCP or proxyDHCP offers were received"
            return await self._local_disk()
        if not await self._tftp(boot_file):
            self.last_message = f"PXE-E32: TFTP open timeout ({boot_file})"
            return await self._local_disk()
        self.phase = "ipxe"
        url = await self._ipxe_dhcp(ipxe_kind)
        if url is None:
            self.last_message = "iPXE: no boot filename from the proxy"
            await self._sleep(5)
            return
        outcome = await self._run_script_url(url)
        if outcome.kind == "boot":
            if any("/wiper/" in a for a in (outcome.kernel or "", *outcome.args)):
                return await self._wipe(outcome)
            return await self._install(outcome)
        if outcome.kind == "reboot":
            return
        # exit / sanboot: the next boot device is the local disk
        return await self._local_disk()

    async def _firmware_pxe(self, kind: str) -> str | None:
        s = self.site
        spec = pxe_client.ClientSpec(self.mac, kind, guid=self.uuid)
        for window in FIRMWARE_WINDOWS:
            started = time.monotonic()
            try:
                r = await pxe_client.boot(spec, server=s.server, dhcp_port=s.ports["dhcp"],
                                          pxe_port=s.ports["pxe"], bind=(self.ip, 0),
                                          collect=window, fetch=False)
            except OSError as err:
                log.debug("%s: DHCP failed: %s", self.mac, err)
                r = None
            ok = r is not None and r.boot_file is not None
            if ok and self.quirk == "slow-firmware" and (r.offer_after or 0) < \
                    SLOW_FIRMWARE_MIN_DELAY:
                ok = False  # it was still busy with its own DHCP: the offer is lost
            if ok:
                if self.discovered_at is None:
                    self.discovered_at = time.monotonic()
                return r.boot_file
            await self._sleep(max(0.0, window - (time.monotonic() - started)))
        return None

    async def _tftp(self, name: str) -> bool:
        s = self.site
        for _ in range(2):
            try:
                await tftp_get(s.server, s.ports["tftp"], name, blksize=1432, tsize=True,
                               local_host=self.ip, keep_data=False, retransmit_timeout=1.0,
                               retries=4)
                return True
            except (TftpError, TftpTimeout, OSError) as err:
                log.debug("%s: TFTP %s failed: %s", self.mac, name, err)
                await self._sleep(1.0)
        return False

    async def _ipxe_dhcp(self, kind: str) -> str | None:
        s = self.site
        spec = pxe_client.ClientSpec(self.mac, kind, guid=self.uuid)
        for window in (2.0, 4.0, 8.0):
            try:
                r = await pxe_client.boot(spec, server=s.server, dhcp_port=s.ports["dhcp"],
                                          pxe_port=s.ports["pxe"], bind=(self.ip, 0),
                                          collect=window, fetch=False)
            except OSError:
                r = None
            if r is not None and r.boot_file and r.boot_file.startswith("http"):
                return r.boot_file
            if r is not None and r.answered:
                return None
        return None

    # -- the iPXE interpreter ----------------------------------------------------------

    def settings(self) -> dict[str, str]:
        _, _, platform, buildarch = FIRMWARE[self.hw.firmware]
        return {"mac": self.mac, "uuid": str(self.uuid), "serial": self.hw.serial,
                "manufacturer": self.hw.manufacturer, "product": self.hw.product,
                "platform": platform, "buildarch": buildarch, "version": IPXE_VERSION,
                "ip": self.ip, "hostname": ""}

    def expand(self, text: str) -> str:
        values = self.settings()

        def sub(m: re.Match) -> str:
            name, _, kind = m.group(1).partition(":")
            value = values.get(name, "")
            return quote(value, safe="-_.~") if kind == "uristring" else value

        return re.sub(r"\$\{([^}]*)\}", sub, text)

    async def _fetch_script(self, url: str) -> list[str] | None:
        try:
            status, text = await http_request("GET", url, local=self.ip)
        except (OSError, asyncio.TimeoutError) as err:
            log.debug("%s: GET %s failed: %s", self.mac, url, err)
            return None
        if status != 200 or not text.startswith("#!ipxe"):
            return None
        return text.splitlines()[1:]

    async def _run_script_url(self, url: str) -> Outcome:
        lines = await self._fetch_script(url)
        if lines is None:
            self.last_message = f"iPXE: could not boot {url}"
            await self._sleep(3)
            return Outcome("reboot")
        return await self._run(lines)

    async def _run(self, lines: list[str], depth: int = 0) -> Outcome:
        pc = 0
        steps = 0
        kernel: tuple[str, tuple[str, ...]] | None = None
        while pc < len(lines):
            steps += 1
            if steps > MAX_STEPS:
                raise ScriptError("script ran too long")
            line = lines[pc].strip()
            pc += 1
            if not line or line.startswith("#") or line.startswith(":"):
                continue
            # left to right: cmd [&& cmd] [|| cmd]
            segments: list[tuple[str, list[str]]] = []
            op = ""
            current: list[str] = []
            for word in line.split():
                if word in ("||", "&&"):
                    segments.append((op, current))
                    op, current = word, []
                else:
                    current.append(word)
            segments.append((op, current))
            ok = True
            for op, words in segments:
                if op == "&&" and not ok:
                    continue
                if op == "||" and ok:
                    continue
                if not words:
                    ok = True
                    continue
                result = await self._command(words, lines, depth)
                if isinstance(result, Outcome):
                    if result.kind == "kernel":
                        kernel = (result.kernel, result.args)
                        ok = True
                        continue
                    if result.kind == "boot":
                        if kernel is None:
                            ok = False
                            continue
                        return Outcome("boot", kernel[0], kernel[1])
                    return result
                if isinstance(result, tuple):  # ("goto", label) / ("replace", lines)
                    if result[0] == "goto":
                        target = f":{result[1]}"
                        if target not in [l.strip() for l in lines]:
                            ok = False
                            continue
                        pc = [l.strip() for l in lines].index(target) + 1
                        break
                    if result[0] == "replace":
                        lines, pc, kernel = result[1], 0, None
                        break
                ok = bool(result)
        return Outcome("exit")

    async def _command(self, words: list[str], lines: list[str], depth: int):
        name = words[0]
        args = [self.expand(w) for w in words[1:]]
        if name == "echo":
            self.last_message = " ".join(args)
            return True
        if name == "sleep":
            try:
                await self._sleep(float(args[0]))
            except (IndexError, ValueError):
                return False
            return True
        if name == "goto":
            return ("goto", args[0]) if args else False
        if name == "iseq":
            return len(args) >= 2 and args[0] == args[1]
        if name in ("dhcp", "ifconf", "imgfree", "prompt", "set", "isset"):
            return True
        if name == "exit":
            return Outcome("exit")
        if name == "reboot":
            return Outcome("reboot")
        if name == "sanboot":
            return Outcome("sanboot")
        if name == "kernel":
            rest = [a for a in args if not a.startswith("--")]
            if not rest:
                return False
            return Outcome("kernel", rest[0], tuple(rest[1:]))
        if name == "initrd":
            return True
        if name == "boot":
            return Outcome("boot")
        if name == "chain":
            replace = "--replace" in args
            rest = [a for a in args if not a.startswith("--")]
            if not rest:
                return False
            url = rest[0]
            sub = await self._fetch_script(url)
            if sub is None:
                # a report URL answering with a message script counts too
                return False
            if replace:
                return ("replace", sub)
            if depth > 8:
                return False
            outcome = await self._run(sub, depth + 1)
            if outcome.kind == "exit":
                return True
            return outcome
        return False

    # -- installing ------------------------------------------------------------------------

    async def _install(self, outcome: Outcome) -> None:
        s = self.site
        self.installs += 1
        self.phase = "installing"
        m = _INSTALLING_RE.search(self.last_message)
        deployment, hostname = (m.group(1), m.group(2)) if m else ("debian12", self.mac)
        url = next((a.split("=", 1)[1] for a in outcome.args
                    if "=" in a and "/templates/" in a), None)
        if url is None:
            self.phase = "installer: no template URL on the kernel command line"
            return await self._hang()
        await self._sleep(s.install_seconds * 0.1)  # kernel + initrd + installer start
        try:
            status, template = await http_request("GET", url, local=self.ip)
        except (OSError, asyncio.TimeoutError) as err:
            status, template = 0, str(err)
        if status != 200:
            self.phase = f"installer: template fetch failed ({status})"
            return await self._hang()
        phases = ("partitioning", "installing the base system", "installing packages",
                  "configuring")
        for i, phase in enumerate(phases):
            self.phase = f"install: {phase}"
            if self.quirk == "stall" and i == 2:
                self.phase = "install: stuck installing packages"
                return await self._hang()
            await self._sleep(s.install_seconds * 0.8 / len(phases))
        self.phase = "install: calling home"
        callhome = _CALLHOME_RE.search(template)
        token = _TOKEN_RE.search(template)
        if callhome is None or token is None:
            self.phase = "installer: the template has no call-home"
            return await self._hang()
        keys = _KEY_RE.findall(template)  # fleet renders its operator key in
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        reported = host_key
        if self.quirk == "rekey":
            if self.kept_key is not None:
                host_key = self.kept_key  # the first install's key survives (even a wipe)
            else:
                self.kept_key = host_key
        public = reported.export_public_key("openssh").decode().strip()
        body = json.dumps({"token": token.group(1), "hostname": hostname,
                           "address": self.ip, "host_keys": [public]}).encode()
        try:
            status, answer = await http_request("POST", callhome.group(0), local=self.ip,
                                                body=body, content_type="application/json")
        except (OSError, asyncio.TimeoutError) as err:
            status, answer = 0, str(err)
        if status != 200:
            self.phase = f"installer: call home refused ({status})"
            return await self._hang()
        try:
            address = json.loads(answer).get("address") or self.ip
        except ValueError:
            address = self.ip
        _, _, _, buildarch = FIRMWARE[self.hw.firmware]
        self.disk = Disk(NodeOS(hostname=hostname, deployment=deployment, host_key=host_key,
                                authorized_keys=keys,
                                arch="aarch64" if buildarch == "arm64" else "x86_64"),
                         address, reported)
        self.site.disks.save(self.mac, self.disk)
        self.phase = "rebooting after install"
        await self._sleep(s.install_seconds * 0.1)

    async def _wipe(self, outcome: Outcome) -> None:
        """What fleet.build.wiper's /init does: clear the disk, report, reboot."""
        args = dict(a.split("=", 1) for a in outcome.args if "=" in a)
        report, token = args.get("fleet.report"), args.get("fleet.token")
        self.phase = "wiper: clearing the disk"
        await self._sleep(1.0)
        self.disk = None
        self.site.disks.erase(self.mac)
        body = json.dumps({"token": token, "disks": [{"name": "sda", "bytes": SIM_DISK_BYTES}],
                           "failed": []}).encode()
        try:
            status, _ = await http_request("POST", report or "", local=self.ip, body=body,
                                           content_type="application/json")
        except (OSError, asyncio.TimeoutError) as err:
            status = 0
            log.debug("%s: wipe report failed: %s", self.mac, err)
        self.phase = "wiper: reported" if status == 200 else f"wiper: report refused ({status})"
        await self._sleep(0.5)  # then reboot -f

    async def _hang(self) -> None:
        """Sit on an error screen until power-cycled."""
        await self._sleep(10 ** 9)

    # -- the installed OS -----------------------------------------------------------------

    async def _local_disk(self) -> None:
        if self.disk is None:
            self.phase = "no bootable device"
            await self._sleep(self.site.retry_seconds)
            return
        await self._run_os()

    async def _run_os(self) -> None:
        disk = self.disk
        disk.os.booted_at = time.time()
        self.phase = "os: booting"
        await self._sleep(0.5)
        node = NodeServer(disk.os, disk.address, allowed_peers=(self.site.jump_address,),
                          mac=self.mac)
        try:
            await node.start()
        except OSError as err:
            self.phase = f"os: sshd cannot listen on {disk.address}: {err.strerror or err}"
            return await self._hang()
        self.node = node
        self.phase = "os: up"
        if self.quirk == "unreachable":
            await self._sleep(self.site.unreachable_after)
            await self._stop_node()
            self.phase = "os: unreachable (network down)"
        await self._hang()
