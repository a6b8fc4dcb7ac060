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
import subprocess, fleet
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


def test_absent_liboqs_found_absent_without_running_anything():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = probe(env)
    # no liboqs on Debian 12; nothing run; nettle found (UMAC offered); other
    # names still go to the real find_library
    assert out == "None [] True True", out


def test_a_liboqs_on_the_library_path_is_found_and_loaded(tmp_path):
    libz = next(p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib",
                            "/usr/lib") for p in sorted(Path(d).glob("libz.so.1*")))
    shutil.copy(libz, tmp_path / "liboqs.so.5")  # any loadable library will do
    (tmp_path / "liboqs.so").write_text("/* a linker script, not loadable */\n")
    out = probe({**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert out.startswith(repr(str(tmp_path / "liboqs.so.5")) + " [] "), out


def test_find_lib_prefers_the_runtime_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    (tmp_path / "libfleetprobe.so").write_text("")
    assert find_lib("fleetprobe") == str(tmp_path / "libfleetprobe.so")
    (tmp_path / "libfleetprobe.so.2.0.1").write_text("")
    (tmp_path / "libfleetprobe.so.2").write_text("")
    assert find_lib("fleetprobe") == str(tmp_path / "libfleetprobe.so.2")
    assert find_lib("no-such-library-anywhere") is None
