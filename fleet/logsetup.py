"""Where log lines go: everything worth keeping to the log file, fleet's own
lines to stderr.

    configure(log_file, stderr_level=logging.WARNING)   # the headless commands
    configure(log_file, stderr_level=None)              # the console: file only
    configure(log_file, stderr_level=env_level())       # serve: its INFO lines too

The file (Paths.log_file: <state dir>/logs/fleet.log, 0600 in 0700 folders)
is shared by every fleet process (each line names its pid). It gets fleet's lines at
$FLEET_LOG_LEVEL (default INFO) and the libraries' (asyncssh, asyncio,
aiohttp, ...) at WARNING, or at INFO when FLEET_LOG_LEVEL is DEBUG: asyncssh
writes about six INFO lines per SSH connection, and asyncio its "socket.send()
raised exception." when a peer is gone; neither is for the terminal. stderr
gets records from the `fleet` loggers only. Calling again changes the stderr
level and keeps the handlers.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


class _State:
    file: logging.Handler | None = None
    stderr: logging.Handler | None = None


def env_level() -> int:
    """$FLEET_LOG_LEVEL as a logging level (default INFO; DEBUG shows every
    DHCP offer and TFTP ACK)."""
    name = os.environ.get("FLEET_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def configure(log_file: Path, *, stderr_level: int | None = logging.WARNING) -> Path | None:
    """Route log records as the module says; returns the log file, or None when
    it cannot be written (a read-only home: the command still runs, and library
    records are then dropped rather than printed)."""
    fleet_level = env_level()
    logging.getLogger("fleet").setLevel(fleet_level)
    root = logging.getLogger()
    root.setLevel(logging.INFO if fleet_level <= logging.DEBUG else logging.WARNING)
    if _State.file is None:
        _State.file = _file_handler(log_file) or logging.NullHandler()
        root.addHandler(_State.file)
    if stderr_level is not None:
        if _State.stderr is None:
            _State.stderr = logging.StreamHandler(sys.stderr)
            _State.stderr.setFormatter(logging.Formatter(FORMAT))
            _State.stderr.addFilter(logging.Filter("fleet"))
            root.addHandler(_State.stderr)
        _State.stderr.setLevel(stderr_level)
    path = getattr(_State.file, "baseFilename", None)
    return Path(path) if path else None


def _file_handler(path: Path) -> logging.Handler | None:
    logs_dir = path.parent
    try:
        logs_dir.parent.parent.mkdir(parents=True, exist_ok=True)
        for folder in (logs_dir.parent, logs_dir):  # fleet's state dir, its logs/
            folder.mkdir(exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return handler
