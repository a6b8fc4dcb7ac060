"""Where a profile's control socket lives, and whether that place can be trusted.

    $XDG_RUNTIME_DIR/fleet/<profile>-<hash>.sock    (else /tmp/fleet-<uid>/..., as tmux does)

The directory is the user's own, mode 0700 (created so, and refused otherwise,
like OpenSSH refuses a ControlPath directory others can write): nobody else can
reach the socket or put one there. The hash covers the profile file's resolved
path and fleet's data directory (where the profile's store defaults to), so two
profiles, or one profile under two XDG_DATA_HOMEs, never share a socket.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import struct
from pathlib import Path
from typing import Any

#: a unix socket path is at most 107 bytes on Linux (sun_path is 108 with its NUL)
MAX_PATH = 107


class ControlUnavailable(Exception):
    """No control socket for this profile here (why, in one line)."""


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isabs(base) and os.path.isdir(base):
        return Path(base) / "fleet"
    return Path("/tmp") / f"fleet-{os.getuid()}"


def socket_key(profile_path: Path, data_dir: Path) -> str:
    """Names one profile's socket (the server checks a request carries it)."""
    text = f"{Path(profile_path).resolve()}\0{Path(data_dir).resolve()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def socket_path(profile_path: Path, data_dir: Path, *, create: bool = False) -> Path:
    """The socket's path in a checked private directory (made when `create`);
    ControlUnavailable when there is none."""
    folder = private_runtime_dir(create=create)
    key = socket_key(profile_path, data_dir)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(profile_path).stem)[:24]
    path = folder / f"{stem}-{key}.sock"
    if len(str(path).encode()) > MAX_PATH:
        path = folder / f"{key}.sock"
    if len(str(path).encode()) > MAX_PATH:
        raise ControlUnavailable(f"{folder}: too long a path for a unix socket")
    return path


def private_runtime_dir(*, create: bool) -> Path:
    folder = runtime_dir()
    if create:
        try:
            folder.mkdir(mode=0o700, parents=False, exist_ok=True)
        except OSError as err:
            raise ControlUnavailable(f"cannot create {folder}: {err.strerror}") from None
    try:
        st = os.lstat(folder)
    except OSError as err:
        raise ControlUnavailable(f"{folder}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlUnavailable(f"{folder} is not a directory")
    if st.st_uid != os.getuid():
        raise ControlUnavailable(f"{folder} belongs to uid {st.st_uid}, not to this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ControlUnavailable(f"{folder} is open to others (mode "
                                 f"{stat.S_IMODE(st.st_mode):o}; it must be 700)")
    return folder


_UCRED = struct.Struct("3i")  # pid, uid, gid


def _peer(sock: Any) -> tuple[int, int, int]:
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a connected unix socket."""
    return _peer(sock)[1]


def peer_pid(sock: Any) -> int:
    return _peer(sock)[0]
