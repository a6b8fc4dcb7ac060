"""Pure pieces of the builders and runner: the iPXE script, request checks, the
artifact id, El Torito report parsing, binary magic checks, /proc liveness."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fleet.build.cache import ArtifactCache, Manifest, artifact_id
from fleet.build.iso import el_torito
from fleet.build.request import key_fields, verify_binary
from fleet.build.script import boot_script, chain_url, check_script, check_url
from fleet.build.tools import missing, which
from fleet.errors import BadInput, EnvironmentProblem
from fleet.jobs.procs import group_members, pid_alive


def test_boot_script_retries_dhcp_then_chains():
    url = chain_url("10.77.0.1", 8080)
    assert url == "http://10.77.0.1:8080/boot/${mac}.ipxe"
    script = boot_script(url, "LAB")
    lines = script.splitlines()
    assert lines[0] == "#!ipxe"
    assert lines[2:5] == [":retry", "dhcp || goto wait",
                          "chain http://10.77.0.1:8080/boot/${mac}.ipxe || goto wait"]
    assert lines[5] == "exit"  # the chained script returned: hand back to the firmware
    assert lines[-1] == "goto retry" and any(ln.startswith("sleep ") for ln in lines)
    assert chain_url("fd77::1", 80) == "http://[fd77::1]:80/boot/${mac}.ipxe"


def test_urls_and_scripts_are_checked():
    with pytest.raises(BadInput, match="no HTTPS"):
        check_url("https://10.0.0.1/boot/x.ipxe")
    with pytest.raises(BadInput):
        check_url("http://10.0.0.1/a b")
    with pytest.raises(BadInput, match="#!ipxe"):
        check_script("echo hi\n")
    assert check_script("#!ipxe\nexit") == "#!ipxe\nexit\n"


def test_artifact_id_depends_on_every_input_but_bookkeeping():
    base = {"kind": "iso", "label": "A", "script": "#!ipxe\n"}
    a = artifact_id("iso", {"request": key_fields(base), "key": {"x": 1}})
    same = artifact_id("iso", {"key": {"x": 1}, "request": key_fields(
        {**base, "_retry_of": 7, "distributor": "rack9"})})
    assert a == same and len(a) == 64
    assert artifact_id("iso", {"request": key_fields({**base, "label": "B"}),
                               "key": {"x": 1}}) != a
    assert artifact_id("iso", {"request": key_fields(base), "key": {"x": 2}}) != a
    assert artifact_id("grub", {"request": key_fields(base), "key": {"x": 1}}) != a


def test_el_torito_report_parsing():
    report = """\
El Torito catalog  : 33  1
El Torito images   :   N  Pltf  B   Emul  Ld_seg  Hdpt  Ldsiz         LBA
El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4        1059
El Torito boot img :   2  UEFI  y   none  0x0000  0x00   4096          35
El Torito img path :   1  /isolinux/isolinux.bin
"""
    assert el_torito(report) == ["BIOS", "UEFI"]
    assert el_torito("El Torito catalog  : 33  1\n") == []


def test_binary_magic(tmp_path):
    assert verify_binary(Path("/boot/ipxe.efi")) == "PE32+ EFI application"
    assert verify_binary(Path("/boot/ipxe.lkrn")) == "Linux boot protocol image"
    assert verify_binary(Path("/usr/lib/ipxe/undionly.kpxe")) == "PXE NBP"
    fake = tmp_path / "ipxe.efi"
    fake.write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(EnvironmentProblem, match="no PE signature"):
        verify_binary(fake)
    empty = tmp_path / "x.lkrn"
    empty.write_bytes(b"")
    with pytest.raises(EnvironmentProblem, match="is empty"):
        verify_binary(empty)
    text = tmp_path / "ipxe.lkrn"
    text.write_text("hello" * 200)
    with pytest.raises(EnvironmentProblem, match="Linux-bootable"):
        verify_binary(text)


def test_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem, match="^xorriso not found: apt-get install xorriso$"):
        which("xorriso")
    with pytest.raises(EnvironmentProblem, match="apt-get install mtools"):
        which("mcopy")
    assert missing("x", "y").exit_code == 3


def test_pid_liveness_from_proc():
    proc = subprocess.Popen(["sleep", "5"])
    try:
        assert pid_alive(proc.pid)
        assert pid_alive(proc.pid, started_before=time.time())
        # a job created long before this process started: the PID was reused
        assert not pid_alive(proc.pid, started_before=time.time() - 3600)
        assert group_members(proc.pid) == []  # same group as pytest, not its own
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)
    assert not pid_alive(None) and not pid_alive(0)
    zombie = subprocess.Popen(["true"])
    time.sleep(0.3)  # exited, not yet waited for: a zombie counts as dead
    assert not pid_alive(zombie.pid)
    zombie.wait()


def test_manifest_sha_of_a_folder_artifact(tmp_path):
    cache = ArtifactCache(tmp_path / "artifacts")
    staged = cache.temp_dir("ab" * 32)
    (staged / "a.bin").write_bytes(b"a")
    (staged / "b.bin").write_bytes(b"bb")
    m = cache.commit("ab" * 32, staged, Manifest(id="ab" * 32, kind="ipxe", name="x",
                                                  main=None, files={}, version=None))
    assert m.size == 3 and set(m.files) == {"a.bin", "b.bin"}
    again = cache.lookup("ab" * 32)
    assert again.sha256 == m.sha256 and again.path_in(cache.folder(m.id)) == cache.folder(m.id)
    assert not staged.exists() and cache.folder(m.id).is_dir()
