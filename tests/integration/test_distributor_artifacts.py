"""A distributor's TFTP and HTTP serve the artifacts assigned to it (issue 5).

Real parts: the boot services on 127.0.0.1 high ports, real builds (Debian's
iPXE, syslinux, GRUB, xorriso), curl as the TFTP and HTTP client, and a second
`fleet` process assigning an artifact while the first one serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx

from fleet.boot.assigned import index
from fleet.build.ipxe import STOCK
from fleet.engine import Engine
from support.boot_site import write_boot_site


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _curl_tftp(port: int, name: str, out: Path) -> tuple[int, str]:
    """curl as the TFTP client (a subprocess: the server runs on this event loop)."""
    out.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "30", "--tftp-blksize", "1428", "-o", str(out),
        f"tftp://127.0.0.1:{port}/{name}", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    return proc.returncode, err.decode()


async def _served(http: httpx.AsyncClient, url: str, timeout: float = 10.0) -> httpx.Response:
    """GET until it is no longer 404 (the index follows the change feed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await http.get(url)
        if r.status_code != 404 or asyncio.get_running_loop().time() > deadline:
            return r
        await asyncio.sleep(0.1)


async def test_assigned_artifacts_are_served_over_tftp_and_http(tmp_path, xdg):
    # the distributor's ipxe_dir holds Debian's real binaries (the builders verify them)
    site = write_boot_site(tmp_path, binaries={n: p.read_bytes() for n, p in STOCK.items()})
    engine = await Engine.open(site.path)
    try:
        await engine.boot.start_services()
        base = f"http://127.0.0.1:{site.http}"
        async with httpx.AsyncClient(timeout=10) as http:
            # nothing assigned yet: not served (and no path tricks)
            assert (await http.get(f"{base}/artifacts/ipxe/undionly.kpxe")).status_code == 404
            for bad in ("ipxe/../../etc/passwd", "ipxe/manifest.json", "%2e%2e/x"):
                assert (await http.get(f"{base}/artifacts/{bad}")).status_code == 404

            # 1. assigned by a build in this process, while serving
            ipxe = (await engine.builds.build("ipxe", distributor="rack1")).artifact
            folder = Path(ipxe.path)
            want = (folder / "undionly.kpxe").read_bytes()
            r = await _served(http, f"{base}/artifacts/ipxe/undionly.kpxe")
            assert r.status_code == 200 and _sha(r.content) == _sha(want)
            assert int(r.headers["Content-Length"]) == len(want)
            # Range: iPXE and installers resume; the bytes must be the file's
            r = await http.get(f"{base}/artifacts/ipxe/ipxe.efi",
                               headers={"Range": "bytes=100-1123"})
            assert r.status_code == 206
            assert r.content == (folder / "ipxe.efi").read_bytes()[100:1124]

            # real TFTP client, both name forms
            out = tmp_path / "got.kpxe"
            rc, err = await _curl_tftp(site.tftp, "ipxe/undionly.kpxe", out)
            assert rc == 0, err
            assert _sha(out.read_bytes()) == _sha(want)
            rc, err = await _curl_tftp(site.tftp, "artifacts/ipxe/snponly.efi", out)
            assert rc == 0, err
            assert out.read_bytes() == (folder / "snponly.efi").read_bytes()
            rc, err = await _curl_tftp(site.tftp, "ipxe/manifest.json", out)
            assert rc != 0 and not out.exists()  # file not found

            # 2. assigned by another process (`fleet --headless build iso --distributor`)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet", "--headless", "--profile", str(site.path),
                "--format", "json", "build", "iso", "--label", "SERVED",
                "--distributor", "rack1", env=xdg,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, stderr.decode()
            iso = json.loads(stdout)
            data = Path(iso["path"]).read_bytes()
            r = await _served(http, f"{base}/artifacts/SERVED.iso")
            assert r.status_code == 200 and _sha(r.content) == iso["sha256"] == _sha(data)
            r = await http.get(f"{base}/artifacts/SERVED.iso",
                               headers={"Range": f"bytes={len(data) - 2048}-"})
            assert r.status_code == 206 and r.content == data[-2048:]
            head = await http.head(f"{base}/artifacts/SERVED.iso")
            assert int(head.headers["Content-Length"]) == len(data)
            out = tmp_path / "got.iso"
            rc, err = await _curl_tftp(site.tftp, "SERVED.iso", out)
            assert rc == 0, err
            assert _sha(out.read_bytes()) == iso["sha256"]

        # 3. `distributors` lists what each one serves
        cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(site.path), "--format", "json", "distributors"],
                            env=xdg, capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        (row,) = json.loads(cp.stdout)
        assert {"SERVED.iso", "ipxe/undionly.kpxe", "ipxe/ipxe.efi"} <= set(row["served"])
        assert "ipxe/manifest.json" not in row["served"]
        assert set(row["artifacts"]) == {ipxe.id, iso["id"]}
    finally:
        await engine.close()


def test_index_names_and_clashes(tmp_path):
    """One-file artifacts by name, folders as name/file; the newer build wins a clash."""
    from fleet.core.model import Artifact

    def art(aid, name, path, files, created):
        return Artifact(id=aid, kind="x", name=name, path=str(path), sha256="0", size=1,
                        created_at=created, meta={"files": {f: {} for f in files}})

    old = art("a", "LAB.iso", tmp_path / "a" / "LAB.iso", ["LAB.iso", "script.ipxe"], 1.0)
    new = art("b", "LAB.iso", tmp_path / "b" / "LAB.iso", ["LAB.iso"], 2.0)
    folder = art("c", "ipxe", tmp_path / "c", ["ipxe.efi", "manifest.json", "../x"], 1.5)
    names = index([new, old, folder])
    assert sorted(names) == ["LAB.iso", "ipxe/ipxe.efi"]
    assert names["LAB.iso"][0] == tmp_path / "b" / "LAB.iso"
