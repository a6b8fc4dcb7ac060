"""A folder holding a Debian kernel and a static busybox for the wiper builder,
unpacked from the packages (`apt-get download` + `dpkg-deb -x`: no install, no
postinst, nothing changed on the host).

    root = wiper_root()        # Path, or None with the reason in WHY_MISSING

The folder is `$FLEET_TEST_WIPER_ROOT`, else /var/cache/fleet-tests/wiper-root,
filled once (under a flock) and kept between runs. Packages: the kernel the
meta package linux-image-cloud-amd64 depends on (small, has virtio) and
busybox-static. scripts/test fills it before the suite runs (CI); a test run
by hand fills it on first use when apt-get is there and we are root.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

DEFAULT = Path("/var/cache/fleet-tests/wiper-root")
META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
WHY_MISSING: list[str] = []


def _ready(root: Path) -> bool:
    return (any((root / "boot").glob("vmlinuz-*")) and (root / "bin" / "busybox").is_file()
            and (root / "lib" / "modules").is_dir())


def _run(argv: list[str], cwd: Path) -> str:
    cp = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {cp.stderr.strip()[-500:]}")
    return cp.stdout


def fill(root: Path) -> None:
    """Download and unpack the packages into `root` (replacing what was there)."""
    with tempfile.TemporaryDirectory(prefix="wiper-debs.") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's _apt user writes the downloads
        try:
            _run(["apt-get", "download", "-q", META_PACKAGE, BUSYBOX], work)
        except RuntimeError:  # package lists missing or stale: refresh them once
            _run(["apt-get", "update", "-q"], work)
            _run(["apt-get", "download", "-q", META_PACKAGE, BUSYBOX], work)
        meta = next(work.glob(f"{META_PACKAGE}_*.deb"))
        depends = _run(["dpkg-deb", "-f", str(meta), "Depends"], work)
        kernel = re.search(r"(linux-image-[0-9][^\s,(]*)", depends)
        if kernel is None:
            raise RuntimeError(f"{META_PACKAGE} depends on no kernel: {depends!r}")
        _run(["apt-get", "download", "-q", kernel.group(1)], work)
        staged = root.with_name(root.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for deb in sorted(work.glob("*.deb")):
            if deb != meta:
                _run(["dpkg-deb", "-x", str(deb), str(staged)], work)
        shutil.rmtree(root, ignore_errors=True)
        staged.rename(root)


def wiper_root() -> Path | None:
    root = Path(os.environ.get("FLEET_TEST_WIPER_ROOT") or DEFAULT)
    if _ready(root):
        return root
    WHY_MISSING.clear()
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        WHY_MISSING.append(f"no kernel + busybox-static unpacked in {root} (scripts/test "
                           f"fills it as root with apt-get)")
        return None
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".wiper-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(root):
            try:
                fill(root)
            except (RuntimeError, OSError, StopIteration, subprocess.SubprocessError) as err:
                WHY_MISSING.append(f"could not unpack the wiper's packages: {err}")
                return None
    return root if _ready(root) else None


if __name__ == "__main__":  # scripts/test: fill it before the suite
    found = wiper_root()
    print(found if found else WHY_MISSING[0])
    raise SystemExit(0 if found else 1)
