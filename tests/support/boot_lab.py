"""The distributor's HTTP service on 127.0.0.1 (port 0) over a real engine, with
httpx as the client: the lab of the HTTP and call-home tests."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import httpx

from fleet.boot.files import BootFiles
from fleet.boot.http import HttpService
from fleet.engine import Engine
from support.profiles import merged, write_profile

MAC = "52:54:00:12:34:56"
MAC2 = "52:54:00:65:43:21"
ROOT_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip() \
    + " ops@example"
REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "profiles" / "templates"


@dataclass
class BootLab:
    engine: Engine
    http: HttpService
    client: httpx.AsyncClient
    root: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    async def boot(self, mac: str = MAC, **params) -> httpx.Response:
        return await self.client.get(f"/boot/{mac}.ipxe", params=params or None)

    async def seen(self, mac: str = MAC) -> None:
        r = await self.boot(mac)
        assert r.status_code == 200
        await self.engine.flush_sightings()

    async def leased(self, mac: str = MAC, deployment: str = "debian12",
                     hostname: str = "web7", address: str | None = "10.91.0.50"):
        await self.seen(mac)
        return await self.engine.lease(mac, deployment, hostname, address)

    async def kinds(self, subject: str) -> list[str]:
        return [e.kind for e in await self.engine.events(200, subject=subject)]

    async def events_of(self, kind: str):
        return [e for e in await self.engine.events(500) if e.kind == kind]


def make_lab_files(root: Path) -> None:
    templates = root / "templates"
    templates.mkdir(parents=True)
    shutil.copy(REPO_TEMPLATES / "debian12.preseed", templates)
    shutil.copy(REPO_TEMPLATES / "rocky9.ks", templates)
    (templates / "shell.ipxe").write_text(
        "#!ipxe\necho fleet script for {{ hostname }} ({{ mac }})\n"
        "chain {{ template_url }}\n")
    (templates / "broken.ks").write_text("network --hostname={{ hostname }}\n{{ nonsense }}\n")
    (root / "tftp" / "debian12").mkdir(parents=True)
    (root / "tftp" / "debian12" / "linux").write_bytes(random.Random(1).randbytes(300_000))
    (root / "tftp" / "hello.txt").write_text("hello\n")
    (root / "ipxe").mkdir()
    (root / "ipxe" / "ipxe.efi").write_bytes(b"MZ" + bytes(range(256)) * 40)


def write_lab_profile(root: Path, overrides: dict | None = None) -> Path:
    """<root>/lab.yaml: profiles/boot_http.yaml with the lab's authorized keys
    (debian12 lists it twice), `overrides` merged over it."""
    keys = {"deployments": [{"name": "debian12", "authorized_keys": [ROOT_KEY, ROOT_KEY]},
                            {"name": "rocky9", "authorized_keys": [ROOT_KEY]}]}
    return write_profile(root, "lab", "boot_http", merged(keys, overrides or {}))


async def open_lab(root: Path, overrides: dict | None = None) -> BootLab:
    make_lab_files(root)
    path = write_lab_profile(root, overrides)
    engine = await Engine.open(path)
    http = HttpService(engine, "lab", BootFiles(engine.profile, "lab", system_dirs=()))
    await http.start("127.0.0.1", 0)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=10)
    return BootLab(engine, http, client, root)


async def close_lab(lab: BootLab) -> None:
    await lab.client.aclose()
    await lab.http.stop()
    await lab.engine.close()
