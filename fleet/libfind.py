"""Find the C libraries asyncssh loads without running ldconfig or a compiler.

asyncssh asks `ctypes.util.find_library` for "nettle" (UMAC) and, in its
post-quantum module, for "oqs" then "liboqs". On Linux each call runs
`ldconfig -p`, and a name it does not list then runs gcc and ld: with no liboqs
(Debian 12 has no package) that is 60-100 ms of every cold
`fleet --headless exec` on an idle box, seven processes competing with the
fan-out on a busy one, and a surprise in an strace. This looks for the same
files in the dynamic linker's directories itself; any other name goes to the
real find_library. The entry point (fleet.cli.run) calls `install()`, which
patches the lookup when asyncssh is first imported, so importing fleet
changes nothing and costs nothing.
"""

from __future__ import annotations

import os
import sys

_NAMES = ("oqs", "liboqs", "nettle")


def _linker_dirs() -> list[str]:
    import glob
    import sysconfig

    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for conf in ["/etc/ld.so.conf", *sorted(glob.glob("/etc/ld.so.conf.d/*.conf"))]:
        try:
            with open(conf, encoding="utf-8", errors="replace") as f:
                dirs += [line.split("#")[0].strip() for line in f
                         if line.strip().startswith("/")]
        except OSError:
            continue
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for base in ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"):
        dirs += [f"{base}/{arch}", base] if arch else [base]
    return dirs


def find_lib(name: str) -> str | None:
    """The path of a loadable lib<name>.so.N (else lib<name>.so) in the linker's
    directories. Each candidate is loaded once to check it (asyncssh loads it
    next anyway, and does not catch a failure): a stray text file, a dangling
    link, a linker script or another architecture's library is passed over, as
    the real lookup would."""
    import ctypes
    import glob

    for d in _linker_dirs():
        found = glob.glob(os.path.join(glob.escape(d), f"lib{name}.so*"))
        # the runtime file (soname, e.g. liboqs.so.5) first: a bare .so is for the
        # linker and may be a script (libc.so is one)
        versioned = sorted((f for f in found if not f.endswith(".so")),
                           key=lambda f: (len(f), f))
        for path in versioned + [f for f in found if f.endswith(".so")]:
            try:
                ctypes.CDLL(path)
            except OSError:
                continue
            return path
    return None


class _PatchOnImport:
    """A meta path finder that patches find_library when asyncssh is about to be
    imported and finds nothing itself (the normal finders load the
    module). It stays in sys.meta_path: removing itself while the import system
    walks that list would skip the next finder."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "asyncssh":
            install_lookup()
        return None


def install_lookup() -> None:
    import ctypes.util

    real = ctypes.util.find_library
    if getattr(real, "fleet_lookup", False):
        return

    def find_library(name: str) -> str | None:
        return find_lib(name) if name in _NAMES else real(name)

    find_library.fleet_lookup = True  # type: ignore[attr-defined]
    ctypes.util.find_library = find_library


def install() -> None:
    # elsewhere the libraries are not lib*.so files, and find_library needs no help
    if not sys.platform.startswith("linux") or "asyncssh" in sys.modules:
        return
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
