"""Builders with the real tools (xorriso, grub-mkstandalone, mtools, syslinux,
iPXE binaries, make), the content-addressed cache, and the CLI around them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.build.cache import sha256_file
from fleet.build.iso import el_torito
from fleet.core.model import JobState
from fleet.engine import Engine
from fleet.build.api import BuildFailed
from support.profiles import isolated_env

FLEET = str(Path(sys.executable).with_name("fleet"))


def sh(*argv, **kw) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True,
                          **kw).stdout


def file_type(path: Path) -> str:
    return sh("file", "-b", path).strip()


def extract(iso: Path, inner: str, dest: Path) -> Path:
    sh("xorriso", "-osirrox", "on", "-indev", iso, "-extract", inner, dest)
    return dest


def check_manifest(folder: Path) -> dict:
    """Every file of a cached artifact matches its manifest (nothing corrupted)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, facts in manifest["files"].items():
        assert sha256_file(folder / name) == facts["sha256"], name
        assert (folder / name).stat().st_size == facts["size"]
    return manifest


async def test_iso_is_hybrid_bios_and_uefi_and_chains_the_distributor(engine, tmp_path):
    outcome = await engine.builds.build("iso", label="LAB1", distributor="rack1")
    a = outcome.artifact
    iso = Path(a.path)
    assert not outcome.cached and outcome.job_id is not None
    assert iso.name == "LAB1.iso" and a.size == iso.stat().st_size
    assert a.sha256 == hashlib.sha256(iso.read_bytes()).hexdigest()
    report = sh("xorriso", "-indev", iso, "-report_el_torito", "plain")
    assert sorted(el_torito(report)) == ["BIOS", "UEFI"]
    assert "/isolinux/isolinux.bin" in report and "/boot/efiboot.img" in report
    kind = file_type(iso)
    assert "ISO 9660" in kind and "'LAB1'" in kind and "bootable" in kind
    assert "DOS/MBR boot sector" in kind  # isohybrid: boots from a USB stick too

    script = extract(iso, "/script.ipxe", tmp_path / "script.ipxe").read_text()
    assert script.startswith("#!ipxe\n")
    assert "chain http://10.77.0.1:8067/boot/${mac}.ipxe || goto wait" in script
    assert ":retry\ndhcp || goto wait\n" in script and script.rstrip().endswith("goto retry")
    cfg = extract(iso, "/isolinux/isolinux.cfg", tmp_path / "isolinux.cfg").read_text()
    assert "KERNEL /ipxe.lkrn" in cfg and "INITRD /script.ipxe" in cfg
    lkrn = extract(iso, "/ipxe.lkrn", tmp_path / "ipxe.lkrn")
    assert "Linux kernel x86 boot executable" in file_type(lkrn)

    img = extract(iso, "/boot/efiboot.img", tmp_path / "efiboot.img")
    assert "FAT" in file_type(img)
    listing = sh("mdir", "-b", "-i", img, "::/EFI/BOOT", env={**os.environ,
                                                              "MTOOLS_SKIP_CHECK": "1"})
    assert "BOOTX64.EFI" in listing.upper()
    sh("mcopy", "-i", img, "::/EFI/BOOT/BOOTX64.EFI", tmp_path / "BOOTX64.EFI",
       env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    assert "EFI application" in file_type(tmp_path / "BOOTX64.EFI")
    assert b"chainloader /fleet/ipxe.efi" in (tmp_path / "BOOTX64.EFI").read_bytes() or \
        "fleet/ipxe.efi" in (Path(a.path).parent / "manifest.json").read_text()

    stored = await engine.store.artifacts.get(a.id)
    assert stored is not None and stored.path == a.path and stored.kind == "iso"
    assert a.id in (await engine.store.distributors.artifacts("rack1"))
    kinds = [e.kind for e in await engine.events(100)]
    assert "artifact.built" in kinds and "distributor.artifact_assigned" in kinds
    job = await engine.jobs.get(outcome.job_id)
    assert job.state is JobState.SUCCEEDED and job.result["artifact"] == a.id
    phases = [line for _, _, line in await engine.jobs.logs(job.id)]
    assert any(line.startswith("$ ") and "xorriso" in line for line in phases)
    check_manifest(iso.parent)


async def test_ipxe_stock_binaries_are_verified_with_version(engine):
    a = (await engine.builds.build("ipxe")).artifact
    folder = Path(a.path)
    manifest = check_manifest(folder)
    assert set(manifest["files"]) == {"undionly.kpxe", "ipxe.pxe", "snponly.efi", "ipxe.efi",
                                      "ipxe.lkrn"}
    assert "PE32+" in file_type(folder / "ipxe.efi") and "EFI" in file_type(folder / "ipxe.efi")
    assert "pxelinux loader" in file_type(folder / "undionly.kpxe")
    assert "bzImage" in file_type(folder / "ipxe.lkrn")
    version = sh("dpkg-query", "-W", "-f=${Version}", "ipxe").strip()
    assert a.version == version and version
    assert manifest["files"]["ipxe.efi"]["sha256"] == sha256_file(Path("/boot/ipxe.efi"))


async def test_ipxe_from_a_configured_folder(engine, tmp_path):
    folder = tmp_path / "ipxe"
    folder.mkdir()
    (folder / "ipxe.efi").write_bytes(Path("/boot/ipxe.efi").read_bytes())
    a = (await engine.builds.build("ipxe", ipxe_dir=str(folder))).artifact
    assert set(check_manifest(Path(a.path))["files"]) == {"ipxe.efi"}
    (folder / "undionly.kpxe").write_text("not a PXE program")  # wrong magic: refused
    with pytest.raises(BuildFailed, match="is not a PXE network bootstrap program"):
        await engine.builds.build("ipxe", ipxe_dir=str(folder))


async def test_syslinux_pieces(engine):
    a = (await engine.builds.build("syslinux")).artifact
    folder = Path(a.path)
    files = check_manifest(folder)["files"]
    assert set(files) == {"isolinux.bin", "ldlinux.c32", "isohdpfx.bin"}
    assert files["isohdpfx.bin"]["size"] == 432
    assert "ELF 32-bit" in file_type(folder / "ldlinux.c32")
    assert (folder / "isolinux.bin").read_bytes() == \
        Path("/usr/lib/ISOLINUX/isolinux.bin").read_bytes()


async def test_grub_efi_image_and_custom_config(engine, tmp_path):
    a = (await engine.builds.build("grub")).artifact
    folder = Path(a.path)
    check_manifest(folder)
    assert "EFI application" in file_type(folder / "BOOTX64.EFI")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    assert "BOOTX64.EFI" in sh("mdir", "-b", "-i", folder / "efiboot.img", "::/EFI/BOOT",
                               env=env).upper()
    assert "IPXE.EFI" in sh("mdir", "-b", "-i", folder / "efiboot.img", "::/fleet",
                            env=env).upper()
    custom = (await engine.builds.build("grub", grub_cfg="set timeout=5\necho custom\n")).artifact
    assert custom.id != a.id
    assert (Path(custom.path) / "grub.cfg").read_text() == "set timeout=5\necho custom\n"


async def test_a_cache_hit_returns_the_artifact_without_a_job(engine):
    first = await engine.builds.build("iso", label="HIT", distributor="rack1")
    jobs_before = len(await engine.jobs.list())
    started = time.perf_counter()
    again = await engine.builds.build("iso", label="HIT", distributor="rack1")
    took = time.perf_counter() - started
    assert again.cached and again.job_id is None
    assert (again.artifact.id, again.artifact.path, again.artifact.sha256) == \
        (first.artifact.id, first.artifact.path, first.artifact.sha256)
    assert len(await engine.jobs.list()) == jobs_before
    assert took < 0.25, took  # target < 50 ms (see tests/bench/bench_build.py)
    # inputs that differ give other artifacts
    other_label = await engine.builds.build("iso", label="HIT2", distributor="rack1")
    other_script = await engine.builds.build("iso", label="HIT", script="#!ipxe\nexit\n")
    assert len({first.artifact.id, other_label.artifact.id, other_script.artifact.id}) == 3


async def test_the_cache_survives_a_lost_store_row(engine):
    """The cache is the truth about files: an artifact found there is recorded again."""
    a = (await engine.builds.build("syslinux")).artifact
    async with engine.store.transaction() as tx:
        await tx.execute("DELETE FROM artifacts WHERE id = ?", (a.id,))
    again = await engine.builds.build("syslinux")
    assert again.cached and again.artifact.id == a.id
    assert (await engine.store.artifacts.get(a.id)) is not None
    assert "artifact.cached" in [e.kind for e in await engine.events(10, subject=a.id)]


@pytest.mark.slow
async def test_twenty_concurrent_builds_do_not_corrupt_the_cache(engine, profile_path):
    """Two engines (two runners, one cache) each start 10 builds at once: the
    same ISO from both, plus different ones; identical ones meet at the id's lock."""
    other = await Engine.open(profile_path)
    try:
        def requests(eng, tag):
            reqs = [eng.builds.build("iso", label="SAME", distributor="rack1") for _ in range(4)]
            reqs += [eng.builds.build("iso", label=f"DIFF{i}", distributor="rack1")
                     for i in range(3)]
            reqs += [eng.builds.build("iso", label=f"{tag}{i}") for i in range(2)]
            reqs += [eng.builds.build("syslinux")]
            return reqs
        outcomes = await asyncio.wait_for(asyncio.gather(
            *requests(engine, "A"), *requests(other, "B")), 240)
    finally:
        await other.close()
    assert len(outcomes) == 20
    ids = {o.artifact.id for o in outcomes}
    assert len(ids) == 1 + 3 + 2 + 2 + 1
    same = {o.artifact.path for o in outcomes if o.artifact.name == "SAME.iso"}
    assert len(same) == 1
    for artifact_id in ids:
        manifest = check_manifest(engine.paths.artifacts_dir / artifact_id)
        assert manifest["id"] == artifact_id
    leftovers = list((engine.paths.artifacts_dir / ".tmp").iterdir())
    assert leftovers == []
    assert engine.jobs.runner.active_peak["build"] <= 2
    jobs = await engine.jobs.list()
    assert all(j.state is JobState.SUCCEEDED for j in jobs)


FAKE_MAKEFILE = """\
SRCS := $(wildcard core/*.c drivers/*.c)
bin/undionly.kpxe: $(SRCS)
\t@mkdir -p bin
\t@for f in $(SRCS); do echo "  [BUILD] bin/$$(basename $$f .c).o"; done
\t@echo "  [AR] bin/blib.a"
\t@echo "  [LD] bin/undionly.kpxe.tmp"
\t@printf '\\352' > $@
\t@cat $(EMBED) >> $@
\t@echo "  [FINISH] bin/undionly.kpxe"
bin/slow.kpxe: $(SRCS)
\t@mkdir -p bin
\t@for f in $(SRCS); do echo "  [BUILD] bin/$$(basename $$f .c).o"; sleep 0.3; done
\t@echo "  [LD] bin/slow.kpxe.tmp"; sleep 0.3
\t@printf '\\352' > $@
\t@cat $(EMBED) >> $@
bin/broken.kpxe:
\t@echo "  [BUILD] bin/broken.o"
\t@echo "broken.c:1: error: this tree is broken" >&2
\t@exit 2
"""


def fake_ipxe_tree(root: Path) -> Path:
    src = root / "ipxe" / "src"
    for d in ("core", "drivers"):
        (src / d).mkdir(parents=True)
    for name in ("core/main.c", "core/script.c", "drivers/virtio.c", "drivers/e1000.c"):
        (src / name).write_text("int x;\n")
    (src / "Makefile").write_text(FAKE_MAKEFILE)
    return root / "ipxe"


async def test_compile_mode_runs_make_with_the_script_embedded(engine, tmp_path):
    tree = fake_ipxe_tree(tmp_path)
    outcome = await engine.builds.build("ipxe", ipxe_src=str(tree), distributor="rack1")
    folder = Path(outcome.artifact.path)
    kpxe = (folder / "undionly.kpxe").read_bytes()
    assert kpxe[:1] == b"\xea"
    assert b"chain http://10.77.0.1:8067/boot/${mac}.ipxe" in kpxe
    assert (folder / "embed.ipxe").read_bytes() == kpxe[1:]
    job = await engine.jobs.get(outcome.job_id)
    assert job.state is JobState.SUCCEEDED and job.progress == 1.0
    logs = [line for _, _, line in await engine.jobs.logs(job.id)]
    assert any(line.startswith("$ ") and " EMBED=" in line for line in logs)
    assert "  [BUILD] bin/virtio.o" in logs
    # same tree, same script: the cache; a touched source: a new build
    assert (await engine.builds.build("ipxe", ipxe_src=str(tree), distributor="rack1")).cached
    (tree / "src" / "core" / "main.c").write_text("int y;\n")
    rebuilt = await engine.builds.build("ipxe", ipxe_src=str(tree), distributor="rack1")
    assert not rebuilt.cached and rebuilt.artifact.id != outcome.artifact.id


async def test_compile_progress_comes_from_make_output(engine, tmp_path):
    tree = fake_ipxe_tree(tmp_path)
    outcome = await engine.builds.build("ipxe", ipxe_src=str(tree), wait=False,
                                      ipxe_targets=["bin/slow.kpxe"],
                                      chain_url="http://10.0.0.1/x")
    seen = []
    while True:  # watch the job's row as another process would
        job = await engine.jobs.get(outcome.job_id)
        if not seen or seen[-1] != (job.progress, job.phase):
            seen.append((job.progress, job.phase))
        if job.state.finished:
            break
        await asyncio.sleep(0.05)
    assert job.state is JobState.SUCCEEDED
    phases = [p for _, p in seen]
    for phase in ("compile bin/main.o", "compile bin/virtio.o", "ld bin/slow.kpxe.tmp",
                  "done"):
        assert phase in phases
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert dict((p, f) for f, p in seen)["compile bin/virtio.o"] > 0.2


async def test_a_failing_compile_fails_the_job_with_makes_words(engine, tmp_path):
    tree = fake_ipxe_tree(tmp_path)
    with pytest.raises(BuildFailed, match=r"make exited with status 2: .*this tree is broken"):
        await engine.builds.build("ipxe", ipxe_src=str(tree), ipxe_targets=["bin/broken.kpxe"],
                                chain_url="http://10.0.0.1/x")
    failed = (await engine.jobs.list())[0]
    assert failed.state is JobState.FAILED
    assert not [p for p in (engine.paths.artifacts_dir / ".tmp").iterdir()]


# -- the CLI ------------------------------------------------------------------------

def fleet(profile: Path, env: dict, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([FLEET, "--headless", "-p", str(profile), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def path_without(tmp_path: Path, missing: set[str]) -> str:
    """A PATH folder holding links to the tools a build needs, minus `missing`."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in ("xorriso", "grub-mkstandalone", "mformat", "mcopy", "mmd", "mdir", "make",
                 "dpkg-query", "sh", "file"):
        if tool not in missing:
            real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
            if real:
                (folder / tool).symlink_to(real)
    return str(folder)


@pytest.mark.parametrize("what,tool,package", [("iso", "xorriso", "xorriso"),
                                               ("grub", "mformat", "mtools"),
                                               ("grub", "grub-mkstandalone", "grub-common")])
def test_a_missing_tool_exits_3_naming_the_package(tmp_path, profile_path, what, tool,
                                                   package):
    env = {**isolated_env(tmp_path), "PATH": path_without(tmp_path, {tool})}
    out = fleet(profile_path, env, "build", what, "--distributor", "rack1")
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert out.stderr.strip() == f"fleet: {tool} not found: apt-get install {package}"
    assert "Traceback" not in out.stderr
    jobs = fleet(profile_path, env, "jobs", "--format", "json")
    assert json.loads(jobs.stdout) == []  # refused before any job was queued


def test_cli_build_prints_id_path_sha256_and_lists_artifacts(tmp_path, profile_path):
    env = isolated_env(tmp_path)
    out = fleet(profile_path, env, "build", "iso", "--label", "CLI", "--distributor", "rack1",
                "--format", "json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["kind"] == "iso" and record["cached"] is False and record["job"] >= 1
    assert record["sha256"] == sha256_file(Path(record["path"]))
    table = fleet(profile_path, env, "build", "iso", "--label", "CLI", "--distributor",
                  "rack1")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0] == "iso artifact CLI.iso from the cache"
    assert lines[1:] == [f"id      {record['id']}", f"path    {record['path']}",
                         f"sha256  {record['sha256']}"]
    listed = json.loads(fleet(profile_path, env, "artifacts", "--format", "json").stdout)
    assert [(a["id"], a["distributors"]) for a in listed] == [(record["id"], ["rack1"])]
    jobs = json.loads(fleet(profile_path, env, "jobs", "--format", "json").stdout)
    assert [(j["id"], j["kind"], j["state"]) for j in jobs] == [(record["job"], "iso",
                                                                 "succeeded")]
    log = fleet(profile_path, env, "job", "log", str(record["job"]))
    assert log.returncode == 0 and "El Torito boot img" in log.stdout
    bad = fleet(profile_path, env, "build", "iso", "--distributor", "nowhere")
    assert bad.returncode == 2 and "unknown distributor 'nowhere'" in bad.stderr
    assert fleet(profile_path, env, "job", "cancel", "999").returncode == 2


def test_cli_no_wait_hands_the_build_to_a_worker(tmp_path, profile_path):
    env = isolated_env(tmp_path)
    out = fleet(profile_path, env, "build", "iso", "--label", "BG", "--chain-url",
                "http://10.0.0.9:8080/boot/${mac}.ipxe", "--no-wait", "--format", "json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["state"] == "queued" and record["artifact"] is None
    follow = fleet(profile_path, env, "job", "log", str(record["job"]), "--follow",
                   timeout=120)
    assert follow.returncode == 0, follow.stdout
    assert "El Torito boot img" in follow.stdout
    jobs = json.loads(fleet(profile_path, env, "jobs", "--format", "json").stdout)
    assert jobs[0]["state"] == "succeeded" and jobs[0]["result"]["name"] == "BG.iso"


def test_cli_jobs_follow_prints_state_and_progress_changes(tmp_path, profile_path):
    env = isolated_env(tmp_path)
    follower = subprocess.Popen([FLEET, "--headless", "-p", str(profile_path), "jobs",
                                 "--follow", "--format", "jsonl"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let it start following
        build = fleet(profile_path, env, "build", "iso", "--label", "FOLLOW",
                      "--distributor", "rack1", "--format", "json")
        assert build.returncode == 0, build.stderr
        job_id = json.loads(build.stdout)["job"]
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            if not line:
                break
            row = json.loads(line)
            seen.append((row["id"], row["state"], row["phase"]))
            if row["id"] == job_id and row["state"] == "succeeded":
                break
    finally:
        follower.terminate()
        follower.wait(10)
    assert seen and seen[-1] == (job_id, "succeeded", "done")
    assert all(s[0] == job_id for s in seen)
    assert follower.returncode == 130  # interrupted by a signal, per the contract


def test_cli_retry_no_wait_runs_in_a_worker(tmp_path, profile_path):
    env = isolated_env(tmp_path)
    first = json.loads(fleet(profile_path, env, "build", "syslinux", "--format", "json").stdout)
    out = fleet(profile_path, env, "job", "retry", str(first["job"]), "--no-wait",
                "--format", "json")
    assert out.returncode == 0, out.stderr
    queued = json.loads(out.stdout)
    assert queued["retry_of"] == first["job"] and queued["state"] == "queued"
    log = fleet(profile_path, env, "job", "log", str(queued["id"]), "--follow", timeout=60)
    assert log.returncode == 0, log.stdout  # the worker ran it to success
    assert "already in the cache" in log.stdout  # retry of a build finds its artifact
