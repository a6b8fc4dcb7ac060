"""fleet: a terminal console for bare-metal fleets."""

from fleet import libfind as _libfind

_libfind.install()  # before anything imports asyncssh: see fleet/libfind.py
