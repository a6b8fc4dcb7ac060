"""The distributor's HTTP service: real aiohttp on 127.0.0.1 (port 0), httpx as the
client, the engine on a real SQLite file, the real BootFiles over tmp folders.

Hold loop and sightings, install script and the provisioning transition,
templates by token, local boot, the wipe round trip, files with Range, size
limits, and a small fuzz that must never produce a 500.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import httpx
import pytest

from fleet.boot.files import BootFiles
from fleet.boot.http import HttpService
from fleet.core.arch import FirmwareArch
from fleet.core.model import MachineState
from fleet.engine import Engine
from fleet.access.keys import operator_key
from support.boot_lab import (MAC, MAC2, ROOT_KEY, close_lab, make_lab_files, open_lab,
                              write_lab_profile)


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = await open_lab(tmp_path)
    yield lab
    await close_lab(lab)


def chain_url(script: str) -> str:
    m = re.search(r"^chain (?:--\S+ )*(http://\S+)", script, re.M)
    assert m, script
    return m.group(1)


# -- the hold loop and sightings ---------------------------------------------------------

async def test_unknown_mac_gets_the_hold_script_and_is_recorded(lab):
    r = await lab.client.get(f"/boot/{MAC.upper().replace(':', '-')}.ipxe")
    assert r.status_code == 200
    text = r.text
    assert text.startswith("#!ipxe\n")
    assert "echo fleet: waiting to be leased" in text
    assert "sleep 7\n" in text
    assert (f"chain --autofree --replace {lab.base}/boot/${{mac}}.ipxe"
            f"?uuid=${{uuid}}&serial=${{serial:uristring}}" in text)
    assert text.rstrip().endswith("|| goto fleet_wait")
    await lab.engine.flush_sightings()
    m = await lab.engine.machine(MAC)
    assert m.state is MachineState.DISCOVERED
    assert m.stage == "ipxe" and m.distributor == "lab" and m.last_ip == "127.0.0.1"
    assert await lab.kinds(MAC) == ["machine.discovered"]


async def test_the_hold_loops_own_url_reports_facts_which_are_validated(lab):
    await lab.seen()
    url = chain_url((await lab.boot()).text)
    filled = (url.replace("${mac}", MAC)
              .replace("${uuid}", "4C4C4544-0051-3510-8051-B4C04F4E3732")
              .replace("${serial:uristring}", "SN%201234%26x")
              .replace("${manufacturer:uristring}", "Dell%20Inc.")
              .replace("${product:uristring}", "PC%20(Q35+ICH9)")
              .replace("${buildarch:uristring}", "x86_64")
              .replace("${platform:uristring}", "efi")
              .replace("${version:uristring}", "1.0.0%2Bgit"))
    r = await lab.client.get(filled)
    assert r.status_code == 200 and "waiting to be leased" in r.text
    await lab.engine.flush_sightings()
    m = await lab.engine.machine(MAC)
    assert m.uuid == "4c4c4544-0051-3510-8051-b4c04f4e3732"
    assert m.ipxe_version == "1.0.0+git"
    assert m.info == {"serial": "SN 1234&x", "manufacturer": "Dell Inc.",
                      "product": "PC (Q35+ICH9)",  # iPXE leaves '+' as is
                      "buildarch": "x86_64", "platform": "efi"}
    assert m.arch is FirmwareArch.UEFI_X64  # learnt on a later poll
    # control characters, bad UUIDs and non-ASCII are dropped, not stored
    r = await lab.boot(uuid="not-a-uuid", serial="a\nb", product="caf\u00e9",
                       manufacturer="${evil}", platform="pcbios", buildarch="y" * 129)
    assert r.status_code == 200
    await lab.engine.flush_sightings()
    m = await lab.engine.machine(MAC)
    assert m.uuid == "4c4c4544-0051-3510-8051-b4c04f4e3732"
    assert m.info["serial"] == "SN 1234&x" and m.info["product"] == "PC (Q35+ICH9)"
    assert m.info["buildarch"] == "x86_64"  # too long: dropped, the old value stays
    assert m.info["manufacturer"] == "${evil}"  # stored as data, printable; never scripted
    assert m.info["platform"] == "pcbios"


async def test_a_new_machine_gets_its_arch_from_ipxe(lab):
    r = await lab.boot(MAC2, platform="efi", buildarch="x86_64")
    assert r.status_code == 200
    await lab.engine.flush_sightings()
    assert (await lab.engine.machine(MAC2)).arch is FirmwareArch.UEFI_X64


async def test_bad_mac_is_400_and_unknown_routes_404(lab):
    assert (await lab.client.get("/boot/nonsense.ipxe")).status_code == 400
    assert (await lab.client.get("/boot/52:54:00:12:34:56")).status_code == 404
    assert (await lab.client.get("/nope")).status_code == 404
    assert (await lab.client.get("/files/")).status_code == 404
    assert (await lab.client.head(f"/boot/{MAC}.ipxe")).status_code == 405
    assert (await lab.client.get("/healthz")).text == "ok\n"
    assert await lab.engine.machines() == []


# -- install ----------------------------------------------------------------------------

async def test_leased_machine_gets_the_install_script_and_becomes_provisioning(lab):
    m = await lab.leased()
    assert m.state is MachineState.LEASED
    r = await lab.client.get(f"/boot/{MAC.replace(':', '-')}.ipxe")
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert lines[0] == "#!ipxe"
    assert lines[1] == "echo fleet: installing debian12 as web7"
    kernel = lines[2]
    assert kernel.startswith("kernel --name kernel http://127.0.0.1:8067/files/debian12/linux "
                             "initrd=initrd0 auto=true priority=critical url=")
    template_url = kernel.rsplit("url=", 1)[1]
    assert re.fullmatch(rf"{re.escape(lab.base)}/templates/\d+\.[a-z0-9]+", template_url)
    assert lines[3] == "initrd --name initrd0 http://127.0.0.1:8067/files/debian12/initrd.gz"
    assert lines[4] == "boot kernel" and len(lines) == 5
    m = await lab.engine.machine(MAC)
    assert m.state is MachineState.PROVISIONING
    # idempotent: the same script again, no second event
    again = await lab.boot()
    assert again.text == r.text
    assert await lab.kinds(MAC) == ["machine.discovered", "machine.leased",
                                    "machine.provisioning"]
    ev = (await lab.events_of("machine.provisioning"))[0]
    assert "web7" in ev.message and "started installing debian12" in ev.message


async def test_template_by_token_renders_the_preseed(lab):
    await lab.leased()
    template_url = (await lab.boot()).text.split("url=", 1)[1].split()[0]
    r = await lab.client.get(template_url)
    assert r.status_code == 200
    text = r.text
    m = await lab.engine.machine(MAC)
    token = lab.engine.callhome_token(m)
    assert "d-i netcfg/get_hostname string web7\n" in text
    assert f'"{token}" "web7" "10.91.0.50"' in text
    assert f"curl -fsS -X POST {lab.base}/api/callhome " in text
    # the deployment's key (listed twice: once is kept) and fleet's operator
    # key, joined by a literal backslash-n for printf %b
    op = (await operator_key(lab.engine)).public
    assert f"printf '%b\\n' '{ROOT_KEY}\\n{op}' >" in text
    assert "{{" not in text and "}}" not in text
    # the template token is not the call-home token and vice versa
    assert token not in template_url
    assert (await lab.client.get(f"/templates/{token}")).status_code == 403


async def test_kickstart_template_and_provisioning_by_template_fetch(lab):
    await lab.leased(deployment="rocky9", hostname="db3", address=None)
    m = await lab.engine.machine(MAC)
    from fleet.boot.callhome import template_token

    r = await lab.client.get(f"/templates/{template_token(lab.engine, m)}")
    assert r.status_code == 200
    assert "network --bootproto=dhcp --device=link --activate --hostname=db3\n" in r.text
    op = (await operator_key(lab.engine)).public
    assert f"cat > /root/.ssh/authorized_keys <<'KEYS'\n{ROOT_KEY}\n{op}\nKEYS\n" in r.text
    assert '"db3" ""' in r.text  # no lease address: empty
    # fetching the template is progress too
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING


async def test_bad_template_tokens_are_403_with_an_event(lab):
    await lab.leased()
    m = await lab.engine.machine(MAC)
    from fleet.boot.callhome import template_token

    good = template_token(lab.engine, m)
    lease_id = m.lease.id
    for bad in (f"{lease_id}.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "999.abc", "x", "1..2",
                good.upper()):
        r = await lab.client.get(f"/templates/{bad}")
        assert r.status_code == 403, bad
    rejected = await lab.events_of("template.rejected")
    assert len(rejected) == 5
    assert rejected[0].subject == MAC and rejected[0].data["lease_id"] == lease_id
    assert rejected[0].data["reason"] == "token does not match its lease"
    for e in rejected:
        assert good not in e.message and good not in str(e.data)
    # after release the good token is refused too
    await lab.engine.release(MAC)
    r = await lab.client.get(f"/templates/{good}")
    assert r.status_code == 403
    last = (await lab.events_of("template.rejected"))[-1]
    assert last.data["reason"] == "the lease has ended"


async def test_script_deployment_serves_its_rendered_template(lab):
    await lab.leased(deployment="shell", hostname="tiny1")
    r = await lab.boot()
    assert r.status_code == 200
    assert r.text.startswith(
        f"#!ipxe\necho fleet script for tiny1 ({MAC})\nchain {lab.base}/templates/")
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING


async def test_unknown_placeholder_is_a_500_with_an_event_and_no_progress(lab):
    await lab.leased(deployment="broken", hostname="b1")
    from fleet.boot.callhome import template_token

    m = await lab.engine.machine(MAC)
    r = await lab.client.get(f"/templates/{template_token(lab.engine, m)}")
    assert r.status_code == 500
    assert "could not be rendered" in r.text and "{{" not in r.text
    failed = await lab.events_of("boot.render_failed")
    assert len(failed) == 1 and failed[0].subject == MAC
    assert "broken.ks:2: unknown placeholder {{ nonsense }}" in failed[0].message
    assert (await lab.engine.machine(MAC)).state is MachineState.LEASED


async def test_deployment_without_kernel_holds_the_machine(lab):
    await lab.leased(deployment="nokernel", hostname="n1")
    r = await lab.boot()
    assert "waiting to be leased" in r.text
    assert (await lab.engine.machine(MAC)).state is MachineState.LEASED


# -- local boot and wipe -----------------------------------------------------------------

async def test_provisioned_boots_locally_and_wipe_waits_for_a_wiper(lab):
    await lab.leased()
    await lab.boot()
    from fleet.core import lifecycle as lc

    await lab.engine.advance(MAC, lc.CallHome())
    r = await lab.boot()
    assert r.text == ("#!ipxe\necho fleet: booting from the local disk\n"
                      "iseq ${platform} efi && exit ||\n"
                      "sanboot --no-describe --drive 0x80 || exit\nexit\n")
    await lab.engine.release(MAC, wipe=True)
    # no wiper image built: the machine waits, nothing is reported wiped
    # (the wipe with a wiper: tests/integration/test_wipe.py)
    r = await lab.boot()
    assert r.text.startswith("#!ipxe\necho fleet: waiting to be wiped: no wiper image")
    assert chain_url(r.text) == f"{lab.base}/boot/${{mac}}.ipxe"
    assert (await lab.engine.machine(MAC)).state is MachineState.WIPING
    assert len(await lab.events_of("wipe.no_image")) == 1


# -- files ------------------------------------------------------------------------------

async def test_files_with_range_head_and_refusals(lab):
    data = (lab.root / "tftp" / "debian12" / "linux").read_bytes()
    r = await lab.client.get("/files/debian12/linux")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    r = await lab.client.get("/files/debian12/linux", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.content == data[1000:2000] and r.headers["content-length"] == "1000"
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    r = await lab.client.get("/files/debian12/linux", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = await lab.client.head("/files/hello.txt")
    assert r.status_code == 200 and r.headers["content-length"] == "6"
    ipxe = (lab.root / "ipxe" / "ipxe.efi").read_bytes()
    r = await lab.client.get("/ipxe/ipxe.efi")
    assert r.status_code == 200 and r.content == ipxe
    for bad in ("/files/../lab.yaml", "/files/debian12/../../lab.yaml",
                "/files/%2e%2e/lab.yaml", "/files/debian12/%2E%2E/%2E%2E/lab.db",
                "/files/debian12", "/files/nothing", "/ipxe/..", "/ipxe/lab.yaml",
                "/files/debian12//linux", "/files/a%00b"):
        r = await lab.client.get(bad)
        assert r.status_code == 404, bad
        assert b"version:" not in r.content and len(r.content) < 100


# -- limits and fuzz --------------------------------------------------------------------

async def test_oversize_bodies_get_413(lab):
    big = b"{" + b" " * (70 * 1024) + b"}"
    r = await lab.client.post("/api/callhome", content=big,
                              headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    async def chunks():
        for _ in range(20):
            yield b" " * 8192

    r = await lab.client.post("/api/callhome", content=chunks(),
                              headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert await lab.engine.store.nodes.get("web7") is None


async def test_fuzzed_paths_and_bodies_never_get_a_500(lab):
    await lab.leased()
    await lab.boot()
    rng = random.Random(7)
    alphabet = "abcdef0123456789:-./%${}#;\"'\\<>?&=~ \t\x7f" + "\u00e9\u2603"
    prefixes = ["/boot/", "/templates/", "/api/wiped/", "/files/", "/ipxe/", "/api/",
                "/", "/boot/52:54:00:12:34:56.ipxe?serial="]
    statuses = set()
    for i in range(150):
        tail = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        try:
            url = rng.choice(prefixes) + httpx.URL(tail).raw_path.decode("ascii", "replace")
            r = await lab.client.get(url)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            continue
        statuses.add(r.status_code)
        assert r.status_code < 500, (url, r.status_code, r.text)
    bodies = [b"", b"null", b"[]", b"{}", b'{"token": 1}', b"\xff\xfe", b'{"token": "1.a"',
              b'{"token": "1.aa", "hostname": "x", "host_keys": "ssh-ed25519 AAAA"}',
              b'{"token": "1.aa", "hostname": "x", "host_keys": [null]}',
              b'{"token": "1.aa", "hostname": "x\\ny", "host_keys": ["ssh-ed25519 AAAA"]}',
              b'{"token": "1.aa", "hostname": "x", "host_keys": ["ssh-ed25519 AAAA"], "z": 1}']
    for _ in range(40):
        bodies.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    for body in bodies:
        for ctype in ("application/json", "text/plain"):
            r = await lab.client.post("/api/callhome", content=body,
                                      headers={"Content-Type": ctype})
            statuses.add(r.status_code)
            assert r.status_code in (400, 403, 415), (body, r.status_code, r.text)
    assert {400, 415}.issubset(statuses)
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING
    assert [n.name for n in await lab.engine.nodes()] == []


async def test_port_in_use_raises_oserror(lab):
    other = HttpService(lab.engine, "lab", lab.http.files)
    with pytest.raises(OSError):
        await other.start("127.0.0.1", lab.http.port)
    assert lab.http.base_url() == f"http://127.0.0.1:{lab.http.port}"


# -- a real iPXE ------------------------------------------------------------------------

QEMU = "/usr/bin/qemu-system-x86_64"


@pytest.mark.slow
async def test_real_ipxe_in_qemu_follows_hold_install_local_and_wipe(tmp_path, xdg):
    """SeaBIOS + the virtio NIC's iPXE ROM (package ipxe-qemu) in QEMU with user-mode
    networking: its DHCP hands out the /boot URL and 10.0.2.2 is this host's
    loopback, so no root and no traffic off the machine. Checks that Debian's
    iPXE runs the scripts as written: facts arrive on the poll, the install
    script fetches the kernel, provisioned boots sanboot, a wipe without a wiper
    image waits (the real wipe: tests/testbed/test_wipe_qemu.py)."""
    import asyncio
    import socket
    import subprocess

    assert Path(QEMU).exists(), "qemu-system-x86 is a test dependency (see notes/testbed.md)"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    files = f"http://10.0.2.2:{port}/files"
    make_lab_files(tmp_path)
    path = write_lab_profile(tmp_path, {
        "sites": [{"name": "lab", "distributor": {"address": "10.0.2.2", "poll_seconds": 1}}],
        "deployments": [
            {"name": "debian12", "kernel": f"{files}/debian12/linux",
             "initrd": f"{files}/debian12/initrd.gz"},
            {"name": "rocky9", "kernel": f"{files}/rocky9/vmlinuz",
             "initrd": f"{files}/rocky9/initrd.img"},
            {"name": "broken", "kernel": f"{files}/rocky9/vmlinuz"}]})
    engine = await Engine.open(path)
    http = HttpService(engine, "lab", BootFiles(engine.profile, "lab", system_dirs=()))
    await http.start("127.0.0.1", port)
    mac = "52:54:00:77:00:10"
    serial = tmp_path / "serial.log"

    def qemu():
        return subprocess.Popen(
            [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-nographic", "-monitor", "none",
             "-serial", f"file:{serial}", "-no-reboot", "-boot", "order=n,reboot-timeout=0",
             "-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{port}/boot/{mac}.ipxe",
             "-device", f"virtio-net-pci,netdev=n0,mac={mac}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def until(check, seconds=90.0):
        for _ in range(int(seconds * 4)):
            await engine.flush_sightings()
            if await check():
                return True
            await asyncio.sleep(0.25)
        return False

    async def machine():
        return await engine.store.machines.get(mac)

    async def stop(proc):
        proc.kill()
        await asyncio.to_thread(proc.wait)

    proc = qemu()
    try:
        async def reported():
            m = await machine()
            return m is not None and "platform" in m.info
        assert await until(reported), serial.read_text(errors="replace")[-2000:]
        m = await machine()
        assert m.info["platform"] == "pcbios" and m.info["manufacturer"] == "QEMU"
        assert m.arch is FirmwareArch.BIOS and m.ipxe_version.startswith("1.")
        assert "+" in m.info["product"]  # "Standard PC (Q35 + ICH9, 2009)": '+' kept
        await engine.lease(mac, "debian12", "web7")

        async def installing():
            return (await machine()).state is MachineState.PROVISIONING
        assert await until(installing, 30)
        # the install script fetches the kernel (random bytes in the lab: it cannot boot)
        assert await until(lambda: _contains(serial, "/files/debian12/linux"), 30)
        await stop(proc)

        from fleet.core import lifecycle as lc
        await engine.advance(mac, lc.CallHome())
        serial.write_text("")
        proc = qemu()
        assert await until(lambda: _contains(serial, "Booting from SAN device 0x80"), 60)
        await stop(proc)

        await engine.release(mac, wipe=True)
        serial.write_text("")
        proc = qemu()

        assert await until(lambda: _contains(serial, "waiting to be wiped: no wiper image"), 60)
        assert (await machine()).state is MachineState.WIPING
    finally:
        await stop(proc)
        await http.stop()
        await engine.close()


async def _contains(path: Path, text: str) -> bool:
    return _contains_now(path, text)


def _contains_now(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


async def test_hold_reboot_variant_reports_once_then_reboots(tmp_path, xdg):
    lab = await open_lab(tmp_path, {"sites": [{"name": "lab",
                                               "distributor": {"hold": "reboot"}}]})
    try:
        first = (await lab.boot()).text
        assert first.splitlines()[2].startswith(f"chain --autofree --replace {lab.base}/boot/")
        assert first.endswith("sleep 7\nreboot || exit\nexit\n")
        url = chain_url(first).replace("${mac}", MAC).replace("${uuid}", "")
        url = re.sub(r"\$\{[a-z]+:uristring\}", "", url).replace("platform=", "platform=efi")
        second = (await lab.client.get(url)).text
        assert second == "#!ipxe\necho fleet: waiting to be leased\nsleep 7\nreboot || exit\nexit\n"
        await lab.engine.flush_sightings()
        assert (await lab.engine.machine(MAC)).info == {"platform": "efi"}
    finally:
        await close_lab(lab)
