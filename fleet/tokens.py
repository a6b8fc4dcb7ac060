"""One-time call-home tokens.

A token is `<lease id>.<HMAC-SHA256(secret, lease id, mac)>`. The secret lives
in a 0600 file beside the store, never in the database, so the database holds
no credential and a template can be re-rendered with the same token at any
time. Whether a token was already used is the lease's `token_used_at`.

Tokens carry a purpose so one kind can never stand in for another:
"callhome" (the default, and the only form before purposes existed: its HMAC
input is unchanged, so tokens issued earlier still verify), "template" (the
URL an installer fetches its kickstart/preseed from) and "wipe" (the URL a
wipe script reports to; its number is the second the machine started wiping,
not a lease id). The other purposes put the purpose name in the HMAC input,
which never starts with a digit, so no two purposes share an input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fleet.errors import EnvironmentProblem

CALLHOME = "callhome"
TEMPLATE = "template"
WIPE = "wipe"
PURPOSES = (CALLHOME, TEMPLATE, WIPE)


#: the shortest secret fleet signs with: an empty or truncated file would make
#: tokens anyone can forge
MIN_SECRET_BYTES = 32


class TokenSigner:
    def __init__(self, secret_file: Path):
        self.secret_file = secret_file
        self._secret: bytes | None = None

    def check(self) -> None:
        """Load (or make) the secret now: raises EnvironmentProblem when it is
        unreadable or too short, so a service refuses to start rather than fail
        every install later."""
        self._key()

    def _key(self) -> bytes:
        if self._secret is None:
            path = self.secret_file
            try:
                secret = path.read_bytes() if path.exists() else _create(path)
            except OSError as err:
                raise EnvironmentProblem(
                    f"cannot read or make the token secret {path}: "
                    f"{err.strerror or err}") from err
            if len(secret) < MIN_SECRET_BYTES:
                raise EnvironmentProblem(
                    f"the token secret {path} holds {len(secret)} bytes, fewer than the "
                    f"{MIN_SECRET_BYTES} a signing key needs, so fleet will not sign with "
                    "it; remove the file and fleet makes a new one (tokens issued with "
                    "the old one stop working)")
            self._secret = secret
        return self._secret

    def _mac(self, lease_id: int, mac: str, purpose: str = CALLHOME) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        text = f"{lease_id}:{mac}" if purpose == CALLHOME else f"{purpose}:{lease_id}:{mac}"
        digest = hmac.new(self._key(), text.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[:20]).decode().lower().rstrip("=")

    def issue(self, lease_id: int, mac: str, purpose: str = CALLHOME) -> str:
        return f"{lease_id}.{self._mac(lease_id, mac, purpose)}"

    @staticmethod
    def lease_id_of(token: str) -> int | None:
        """The lease a token claims to be for (not yet verified)."""
        head, dot, _ = token.partition(".")
        if not dot or not head.isdigit() or len(head) > 12:
            return None
        return int(head)

    def verify(self, token: str, lease_id: int, mac: str, purpose: str = CALLHOME) -> bool:
        if not isinstance(token, str) or not token.isascii():
            return False
        return hmac.compare_digest(token, self.issue(lease_id, mac, purpose))


def _create(path: Path) -> bytes:
    """A new random secret, written whole before it appears under its name (a
    full disk never leaves an empty secret behind); if another process made one
    first, theirs is used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(MIN_SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()
        return secret
    finally:
        tmp.unlink(missing_ok=True)
