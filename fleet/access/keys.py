"""SSH key pairs for deployments: ed25519, private keys in 0600 files under
`paths.keys_dir` (a 0700 folder), never in the store and never logged; the
public halves go into installed machines' authorized_keys.

    pair = await ensure_key(engine, "operator")     # generated once, event key.generated
    keys = await authorized_keys_for(engine, "debian12")
        # the deployment's `authorized_keys` + the operator key's public part

The operator key is the profile's `operator.ssh.identity` when that file exists
(its `.pub` beside it, or derived from the private key), else fleet's own
`keys_dir/operator` pair, generated on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from fleet.errors import BadInput, EnvironmentProblem, UnknownTarget
from fleet.paths import private_dir

if TYPE_CHECKING:
    from fleet.engine import Engine

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
OPERATOR = "operator"


@dataclass(frozen=True)
class KeyPair:
    name: str
    private_path: Path
    public: str  # "ssh-ed25519 AAAA... comment"
    fingerprint: str  # "SHA256:..."


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("."):
        raise BadInput(f"key name {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
    return name


class KeyStore:
    """Key pairs in one folder: NAME (private, 0600) and NAME.pub."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def private_path(self, name: str) -> Path:
        return self.folder / _check_name(name)

    def get(self, name: str) -> KeyPair | None:
        path = self.private_path(name)
        if not path.exists():
            return None
        return _pair_from(name, path)

    def generate(self, name: str, comment: str | None = None) -> tuple[KeyPair, bool]:
        """The pair called `name`, generated if absent; (pair, generated)."""
        existing = self.get(name)
        if existing is not None:
            return existing, False
        private_dir(self.folder)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or f"fleet-{name}")
        path = self.private_path(name)
        data = key.export_private_key("openssh")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return _pair_from(name, path), False
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)
        pub = key.export_public_key("openssh").decode().strip()
        pub_path = path.with_name(path.name + ".pub")
        pub_path.write_text(pub + "\n")
        os.chmod(pub_path, 0o644)
        return _pair_from(name, path), True


def _pair_from(name: str, path: Path) -> KeyPair:
    pub_path = path.with_name(path.name + ".pub")
    try:
        if pub_path.exists():
            public = pub_path.read_text().strip()
            pub_key = asyncssh.import_public_key(public)
        else:
            pub_key = asyncssh.read_private_key(path).convert_to_public()
            public = pub_key.export_public_key("openssh").decode().strip()
    except (OSError, asyncssh.KeyImportError, ValueError) as err:
        raise EnvironmentProblem(f"cannot read the key {path}: {err}") from None
    return KeyPair(name, path, public, pub_key.get_fingerprint("sha256"))


def key_store(engine: "Engine") -> KeyStore:
    return KeyStore(engine.paths.keys_dir)


async def ensure_key(engine: "Engine", name: str) -> KeyPair:
    """The fleet-managed pair `name`, generated (with a key.generated event) if absent."""
    pair, generated = key_store(engine).generate(name)
    if generated and not engine.read_only:
        await engine.record(engine.event(
            "key.generated", name, f"ed25519 key pair {name} generated ({pair.fingerprint})",
            fingerprint=pair.fingerprint, public=pair.public))
    return pair


async def operator_key(engine: "Engine") -> KeyPair:
    identity = engine.profile.operator.ssh.identity
    if identity is not None:
        path = Path(identity).expanduser()
        if path.exists():
            return _pair_from(OPERATOR, path)
    return await ensure_key(engine, OPERATOR)


async def authorized_keys_for(engine: "Engine", deployment: str) -> list[str]:
    """The deployment's `authorized_keys`, then the operator key's public part
    (duplicates dropped, order kept)."""
    try:
        cfg = engine.profile.deployment(deployment)
    except KeyError:
        raise UnknownTarget(f"unknown deployment {deployment!r}") from None
    keys = [k.strip() for k in cfg.authorized_keys if k.strip()]
    keys.append((await operator_key(engine)).public)
    seen: set[str] = set()
    out = []
    for k in keys:
        body = " ".join(k.split()[:2])
        if body not in seen:
            seen.add(body)
            out.append(k)
    return out
