"""fleet.libfind: asyncssh finds nettle and liboqs (or its absence) without
ldconfig, gcc or ld, in a fresh interpreter as the CLI starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fleet.libfind import find_lib

PROBE = """
import subprocess
from fleet import libfind
libfind.install()  # as fleet.cli.run does first
spawned = []
real = subprocess.Popen.__init__
def watch(self, args, *a, **k):
    spawned.append(args)
    return real(self, args, *a, **k)
subprocess.Popen.__init__ = watch
import asyncssh, asyncssh.crypto.pq as pq, asyncssh.crypto.umac as umac, ctypes.util
during_import = list(spawned)
print(repr(pq._oqs_lib), during_import, ctypes.util.find_library("c") is not None,
      "umac-64@openssh.com" in [m.decode() for m in asyncssh.mac.get_mac_algs()])
"""


def probe(env: dict[str, str]) -> str:
    cp = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                        env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


def real_lookup(name: str) -> str | None:
    """What ctypes' own find_library says (it runs ldconfig; the test may)."""
    cp = subprocess.run([sys.executable, "-c", "import ctypes.util, sys; "
                         f"print(ctypes.util.find_library({name!r}))"],
                        capture_output=True, text=True, timeout=60)
    return None if cp.stdout.strip() == "None" else cp.stdout.strip()


def test_liboqs_found_or_not_as_the_real_lookup_says_without_running_anything():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = probe(env)
    oqs = real_lookup("oqs") or real_lookup("liboqs")
    # nothing run; nettle found (UMAC offered); other names still go to the real
    # find_library; liboqs as the real lookup finds it (Debian 12 has none)
    if oqs is None:
        assert out == "None [] True True", out
    else:
        assert oqs in out.split(" [] ")[0] and out.endswith(" [] True True"), (oqs, out)


def loadable_copy(dest: Path) -> Path:
    libz = next(p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib",
                            "/usr/lib") for p in sorted(Path(d).glob("libz.so.1*")))
    shutil.copy(libz, dest)  # any loadable library will do
    return dest


def test_a_liboqs_on_the_library_path_is_found_and_loaded(tmp_path):
    loadable_copy(tmp_path / "liboqs.so.5")
    (tmp_path / "liboqs.so").write_text("/* a linker script, not loadable */\n")
    out = probe({**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert out.startswith(repr(str(tmp_path / "liboqs.so.5")) + " [] "), out


def test_an_unloadable_liboqs_is_passed_over_and_asyncssh_still_imports(tmp_path):
    (tmp_path / "liboqs.so.5").write_text("not a library\n")
    (tmp_path / "liboqs.so.6").symlink_to(tmp_path / "gone.so")  # dangling
    out = probe({**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert str(tmp_path) not in out and out.endswith(" [] True True"), out


def test_find_lib_prefers_the_runtime_file_and_skips_what_cannot_load(tmp_path,
                                                                      monkeypatch):
    def lookup(case: str, files: dict[str, bool]) -> str | None:
        d = tmp_path / case  # a fresh directory and name per case: a loaded
        d.mkdir()            # library must not be rewritten under the process
        for suffix, loadable in files.items():
            if loadable:
                loadable_copy(d / f"lib{case}{suffix}")
            else:
                (d / f"lib{case}{suffix}").write_text("")
        monkeypatch.setenv("LD_LIBRARY_PATH", str(d))
        found = find_lib(case)
        return found and found[len(str(d)) + 1:]

    assert lookup("probea", {".so": True}) == "libprobea.so"
    assert lookup("probeb", {".so": True, ".so.2.0.1": True, ".so.2": True}) == "libprobeb.so.2"
    assert lookup("probec", {".so": True, ".so.2.0.1": True, ".so.2": False}) == \
        "libprobec.so.2.0.1"
    assert lookup("probed", {".so": True, ".so.2": False}) == "libprobed.so"
    assert lookup("probee", {".so": False}) is None
    assert find_lib("no-such-library-anywhere") is None


def test_importing_fleet_installs_no_lookup():
    code = ("import sys, ctypes.util, fleet, fleet.engine; "
            "print([type(f).__name__ for f in sys.meta_path if 'fleet' in type(f).__module__], "
            "getattr(ctypes.util.find_library, 'fleet_lookup', False))")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "[] False"
