"""Who is on the other end of the agent's channel, as sshd tells the process it
starts: the account (USER), the client's address (SSH_CONNECTION) and, when
sshd runs with `ExposeAuthInfo yes`, the public key that authenticated
(SSH_USER_AUTH names a file listing the methods used). Operators sharing one
account on a site host are told apart by their key's fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import os
from typing import Mapping

#: SSH_USER_AUTH files hold a line or two; a bigger one is not sshd's
_AUTH_FILE_LIMIT = 64 * 1024


def ssh_identity(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"user": ..., "from": client address, "key": "SHA256:..."}; the last two
    only when known (a local run has neither)."""
    env = os.environ if environ is None else environ
    user = env.get("USER") or env.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for this uid
            user = f"uid {os.getuid()}"
    by = {"user": user}
    parts = env.get("SSH_CONNECTION", "").split()
    if len(parts) == 4:
        by["from"] = parts[0]
    auth = env.get("SSH_USER_AUTH")
    if auth:
        fingerprint = key_fingerprint_from_auth_file(auth)
        if fingerprint:
            by["key"] = fingerprint
    return by


def key_fingerprint_from_auth_file(path: str) -> str | None:
    """The SHA256 fingerprint (as `ssh-keygen -l` prints it) of the first
    `publickey` line of sshd's ExposeAuthInfo file, or None."""
    try:
        with open(path, "rb") as f:
            text = f.read(_AUTH_FILE_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "publickey":
            return public_key_fingerprint(fields[2])
    return None


def public_key_fingerprint(blob_base64: str) -> str | None:
    try:
        blob = base64.b64decode(blob_base64, validate=True)
    except (binascii.Error, ValueError):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"
