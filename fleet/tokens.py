"""One-time call-home tokens.

A token is `<lease id>.<HMAC-SHA256(secret, lease id, mac)>`. The secret lives
in a 0600 file beside the store, never in the database, so the database holds
no credential and a template can be re-rendered with the same token at any
time. Whether a token was already used is the lease's `token_used_at`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path


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

    def _mac(self, lease_id: int, mac: str) -> str:
        digest = hmac.new(self._key(), f"{lease_id}:{mac}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[:20]).decode().lower().rstrip("=")

    def issue(self, lease_id: int, mac: str) -> str:
        return f"{lease_id}.{self._mac(lease_id, mac)}"

    @staticmethod
    def lease_id_of(token: str) -> int | None:
        """The lease a token claims to be for (not yet verified)."""
        head, dot, _ = token.partition(".")
        if not dot or not head.isdigit() or len(head) > 12:
            return None
        return int(head)

    def verify(self, token: str, lease_id: int, mac: str) -> bool:
        return hmac.compare_digest(token, self.issue(lease_id, mac))
