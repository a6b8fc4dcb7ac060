"""The wipe over real HTTP (aiohttp on 127.0.0.1, httpx, SQLite): the wiper script
a wiping machine boots, the wiper's files, and `POST /api/wiped` with its
one-time token (wrong, foreign, reused: 403 and an event; malformed: 400).
Plus the `wiper` builder on a Debian kernel and busybox-static unpacked by
tests/support/wiper_root.py (the QEMU proof: tests/testbed/test_wipe_qemu.py).
"""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from fleet.boot.files import BootFiles
from fleet.boot.http import HttpService
from fleet.build import cpio, wiper
from fleet.core.model import Artifact, MachineState
from fleet.engine import Engine
from fleet.errors import EnvironmentProblem
from support.profiles import write_profile
from support.wiper_root import WHY_MISSING, wiper_root

MAC = "52:54:00:12:34:56"
MAC2 = "52:54:00:65:43:21"

class Lab:
    def __init__(self, engine: Engine, http: HttpService, client: httpx.AsyncClient,
                 root: Path):
        self.engine, self.http, self.client, self.root = engine, http, client, root

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    async def boot(self, mac: str = MAC) -> str:
        r = await self.client.get(f"/boot/{mac}.ipxe")
        assert r.status_code == 200
        await self.engine.flush_sightings()
        return r.text

    async def wiping(self, mac: str = MAC) -> None:
        await self.boot(mac)
        await self.engine.release(mac, wipe=True)
        assert (await self.engine.machine(mac)).state is MachineState.WIPING

    async def events_of(self, kind: str):
        return [e for e in await self.engine.events(500) if e.kind == kind]

    async def add_wiper(self, name: str, created_at: float, site: str | None = None) -> Artifact:
        """A wiper artifact as the builder records it (files only stand-ins here)."""
        folder = self.root / "artifacts" / name
        folder.mkdir(parents=True)
        (folder / "vmlinuz").write_bytes(b"kernel " + name.encode() * 1000)
        (folder / "initrd.gz").write_bytes(cpio.gzipped([cpio.Entry.file("init", b"x")]))
        artifact = Artifact(id=(name.encode().hex() * 64)[:64], kind="wiper", name=name,
                            path=str(folder), sha256="0" * 64, size=1, created_at=created_at)
        async with self.engine.store.transaction() as tx:
            await self.engine.store.artifacts.save(tx, artifact)
            if site:
                await self.engine.store.distributors.assign(tx, site, artifact.id)
        return artifact


@pytest.fixture
async def lab(tmp_path, xdg):
    path = write_profile(tmp_path, "wipe", "wipe")
    engine = await Engine.open(path)
    http = HttpService(engine, "lab", BootFiles(engine.profile, "lab", system_dirs=()))
    await http.start("127.0.0.1", 0)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=10)
    yield Lab(engine, http, client, tmp_path)
    await client.aclose()
    await http.stop()
    await engine.close()


def _kernel_line(script: str) -> list[str]:
    line = next(ln for ln in script.splitlines() if ln.startswith("kernel "))
    return line.split()


def _arg(words: list[str], key: str) -> str:
    return next(w.split("=", 1)[1] for w in words if w.startswith(key + "="))


async def test_wiping_machine_boots_the_wiper_and_its_report_returns_it(lab):
    await lab.add_wiper("old", time.time() - 100)
    image = await lab.add_wiper("new", time.time())
    await lab.wiping()
    script = await lab.boot()
    assert script.startswith("#!ipxe\necho fleet: wiping the disks of ${mac} (wiper ")
    words = _kernel_line(script)
    prefix = f"{lab.base}/wiper/{image.id[:16]}"
    assert words[3] == f"{prefix}/vmlinuz" and "initrd=initrd0" in words
    assert f"initrd --name initrd0 {prefix}/initrd.gz || goto fleet_retry" in script
    assert _arg(words, "fleet.report") == f"{lab.base}/api/wiped"
    token = _arg(words, "fleet.token")
    assert re.fullmatch(r"\d+\.[a-z0-9]+", token)
    # the wiper's files, whole and by range
    kernel = (Path(image.path) / "vmlinuz").read_bytes()
    r = await lab.client.get(f"/wiper/{image.id[:16]}/vmlinuz")
    assert r.status_code == 200 and r.content == kernel
    r = await lab.client.get(f"/wiper/{image.id[:16]}/initrd.gz", headers={"Range": "bytes=0-1"})
    assert r.status_code == 206 and r.content == b"\x1f\x8b"
    for bad in (f"/wiper/{image.id[:16]}/manifest.json", f"/wiper/{image.id[:15]}/vmlinuz",
                "/wiper/..%2f..%2fetc/passwd", f"/wiper/{'0' * 16}/vmlinuz"):
        assert (await lab.client.get(bad)).status_code == 404, bad

    r = await lab.client.post("/api/wiped", json={
        "token": token, "disks": [{"name": "vda", "bytes": 64 << 20},
                                  {"name": "nvme0n1", "bytes": 3 << 40}],
        "failed": [], "uptime": "7.31"})
    assert r.status_code == 200, r.text
    assert r.json() == {"mac": MAC, "state": "discovered"}
    m = await lab.engine.machine(MAC)
    assert m.state is MachineState.DISCOVERED
    [wiped] = await lab.events_of("machine.wiped")
    assert re.search(r"wiped in \d+s \(vda 64 MiB, nvme0n1 3 TiB\); back in the pool",
                     wiped.message), wiped.message
    assert wiped.data["disks"] == ["vda", "nvme0n1"]
    assert "waiting to be leased" in await lab.boot()  # back to the hold loop

    # the token is spent
    r = await lab.client.post("/api/wiped", json={"token": token, "disks": []})
    assert r.status_code == 403
    [rejected] = await lab.events_of("wipe.rejected")
    assert "already used" in rejected.message and token not in rejected.message


async def test_wrong_foreign_and_malformed_reports_are_refused(lab):
    await lab.add_wiper("w", time.time())
    await lab.wiping()
    token = _arg(_kernel_line(await lab.boot()), "fleet.token")
    number = token.split(".")[0]
    refused = [
        {"token": f"{number}.{'a' * 32}"},  # forged signature
        {"token": lab.engine.tokens.issue(int(number), MAC)},  # a call-home token
        {"token": lab.engine.tokens.issue(int(number), MAC2, "wipe")},  # another MAC's
        {"token": lab.engine.tokens.issue(int(number) + 1, MAC, "wipe")},  # another release
    ]
    for body in refused:
        r = await lab.client.post("/api/wiped", json={**body, "disks": []})
        assert r.status_code == 403, body
    assert len(await lab.events_of("wipe.rejected")) == len(refused)
    malformed = [{}, {"disks": []}, {"token": "UPPER.x"}, {"token": token, "x": 1},
                 {"token": token, "disks": [{"name": "../sda", "bytes": 1}]},
                 {"token": token, "disks": [{"name": "sda", "bytes": -1}]},
                 {"token": token, "disks": "sda"}, [token]]
    for body in malformed:
        r = await lab.client.post("/api/wiped", json=body)
        assert r.status_code == 400, body
    assert len(await lab.events_of("wipe.invalid")) == len(malformed)
    r = await lab.client.post("/api/wiped", content=b"token=" + token.encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await lab.client.get("/api/wiped")
    assert r.status_code == 405
    # nothing of that moved the machine, and the right token still works
    assert (await lab.engine.machine(MAC)).state is MachineState.WIPING
    r = await lab.client.post("/api/wiped", json={"token": token, "disks": []})
    assert r.status_code == 200
    [wiped] = await lab.events_of("machine.wiped")
    assert "(no disks found)" in wiped.message


async def test_a_disk_the_wiper_could_not_clear_fails_the_machine(lab):
    await lab.add_wiper("w", time.time())
    await lab.wiping()
    token = _arg(_kernel_line(await lab.boot()), "fleet.token")
    r = await lab.client.post("/api/wiped", json={
        "token": token, "disks": [{"name": "sda", "bytes": 1 << 30}],
        "failed": [{"name": "sdb", "error": "read-only"}]})
    assert r.status_code == 200
    m = await lab.engine.machine(MAC)
    assert m.state is MachineState.FAILED
    assert m.reason == "wipe failed on sdb (read-only); cleared: sda 1 GiB"
    assert not await lab.events_of("machine.wiped")


async def test_without_a_wiper_the_machine_waits_and_the_assigned_wiper_wins(lab):
    await lab.wiping()
    script = await lab.boot()
    assert "waiting to be wiped: no wiper image" in script and "kernel" not in script
    await lab.boot()
    [event] = await lab.events_of("wipe.no_image")  # one per release, not per poll
    assert (await lab.engine.machine(MAC)).state is MachineState.WIPING
    # fleet tried to build one from the kernel and busybox-static installed here
    try:
        wiper.find_kernel(Path("/"))
        wiper.find_busybox(Path("/"))
    except EnvironmentProblem as err:
        assert f"none can be built here ({err})" in event.message, event.message
    else:
        assert "building one now" in event.message, event.message
        await lab.engine.jobs.wait(int(event.message.rsplit("job ", 1)[1].rstrip(")")))
        assert "/wiper/" in await lab.boot()
        return
    mine = await lab.add_wiper("mine", time.time() - 50, site="lab")
    await lab.add_wiper("theirs", time.time(), site="other")  # newer, other distributor
    assert f"/wiper/{mine.id[:16]}/vmlinuz" in await lab.boot()


async def test_the_wipe_script_cannot_be_injected_through_the_artifact_or_base():
    from fleet.boot import scripts

    good = dict(kernel_url="http://h/k", initrd_url="http://h/i", report_url="http://h/r",
                token="1.abc", base_url="http://h", retry_seconds=2, label="ab")
    assert scripts.wiper_script(**good).count("\n") == 9
    for key in ("token", "report_url", "label"):
        for evil in ("1.a fleet.token=2.b", "x\nshell", "${x}", "a;b"):
            with pytest.raises(scripts.UnsafeValue):
                scripts.wiper_script(**{**good, key: evil})


# -- the builder ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_root():
    root = wiper_root()
    if root is None:
        why = WHY_MISSING[0] if WHY_MISSING else "no wiper root"
        if os.geteuid() == 0:  # CI runs as root: a missing kernel is a failure there
            pytest.fail(why)
        pytest.skip(f"needs root (apt-get download of the kernel): {why}")
    return root


async def test_wiper_build_holds_kernel_busybox_init_and_modules(kernel_root, tmp_path, xdg):
    path = write_profile(tmp_path, "wipe", "wipe")
    engine = await Engine.open(path)
    try:
        outcome = await engine.builds.build("wiper", wiper_root=str(kernel_root),
                                          distributor="lab")
        a = outcome.artifact
        assert a.kind == "wiper" and a.name.startswith("wiper-6.")
        folder = Path(a.path)
        assert (folder / "vmlinuz").read_bytes()[0x202:0x206] == b"HdrS"
        members = {e.name: e for e in cpio.read(gzip.decompress(
            (folder / "initrd.gz").read_bytes()))}
        assert members["init"].data.decode() == wiper.INIT
        assert wiper.elf_interpreter(members["bin/busybox"].data) is None  # static
        order = members["etc/wiper/modules"].data.decode().split()
        # dependencies load first: virtio before virtio_blk, scsi_mod before sd_mod
        for dep, mod in (("virtio", "virtio_blk"), ("virtio_ring", "virtio"),
                         ("scsi_mod", "sd_mod"), ("virtio", "virtio_net")):
            assert order.index(f"{dep}.ko") < order.index(f"{mod}.ko"), order
        for name in order:
            data = members[f"lib/modules/{name}"].data
            assert wiper.modinfo(data)["name"] == name[:-3]
        assert "nvme" in a.meta["builtin"]  # built into Debian's cloud kernel
        assert (await engine.builds.build("wiper", wiper_root=str(kernel_root))).cached
        assert a.id in await engine.store.distributors.artifacts("lab")
    finally:
        await engine.close()


def test_missing_kernel_or_dynamic_busybox_names_the_package(tmp_path, kernel_root):
    with pytest.raises(EnvironmentProblem, match="apt-get install linux-image-amd64"):
        wiper.find_kernel(tmp_path)
    (tmp_path / "bin").mkdir()
    import shutil
    import sys

    shutil.copy(sys.executable, tmp_path / "bin" / "busybox")  # dynamically linked
    with pytest.raises(EnvironmentProblem, match="apt-get install busybox-static"):
        wiper.find_busybox(tmp_path)
    assert wiper.find_busybox(kernel_root) == kernel_root / "bin" / "busybox"
