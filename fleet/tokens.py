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

CALLHOME = "callhome"
TEMPLATE = "template"
WIPE = "wipe"
PURPOSES = (CALLHOME, TEMPLATE, WIPE)


class TokenSigner:
    def __init__(self, secret_file: Path):
        self.secret_file = secret_file
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            path = self.secret_file
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
            self._secret = path.read_bytes()
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
