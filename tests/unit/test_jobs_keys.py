"""SSH key pairs: ed25519, private key 0600 in a 0700 folder, never in the store
or the events; authorized keys for a deployment = profile keys + operator key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import asyncssh
import pytest

from fleet.access.keys import KeyStore, authorized_keys_for, ensure_key, operator_key
from fleet.engine import Engine
from fleet.errors import BadInput, UnknownTarget
from support.profiles import write_profile

PROFILE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxXcm2YQ2aXb5XH9wNvQ2t0b3p0Y3V0dGVyc2tleTE= ops@lab"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_pair_has_private_modes(tmp_path):
    store = KeyStore(tmp_path / "keys")
    pair, generated = store.generate("deploy")
    assert generated
    assert mode(tmp_path / "keys") == 0o700
    assert mode(pair.private_path) == 0o600
    assert mode(pair.private_path.with_name("deploy.pub")) == 0o644
    key = asyncssh.read_private_key(pair.private_path)
    assert key.algorithm == b"ssh-ed25519"
    assert pair.public.startswith("ssh-ed25519 ") and pair.public.endswith("fleet-deploy")
    assert pair.fingerprint == key.get_fingerprint("sha256")
    again, generated = store.generate("deploy")
    assert not generated and again == pair  # idempotent: never overwritten
    with pytest.raises(BadInput):
        store.generate("../escape")


async def test_ensure_key_records_an_event_without_the_private_key(engine):
    pair = await ensure_key(engine, "operator")
    private_text = pair.private_path.read_text()
    assert "OPENSSH PRIVATE KEY" in private_text
    body = "".join(private_text.splitlines()[1:-1])
    events = await engine.events(10, subject="operator")
    assert [e.kind for e in events] == ["key.generated"]
    assert events[0].data["public"] == pair.public
    assert body not in str(events[0].data) and body[:40] not in events[0].message
    await ensure_key(engine, "operator")
    assert len(await engine.events(10, subject="operator")) == 1
    # nowhere in the database file (nor its WAL)
    db = Path(engine.store.path)
    for f in (db, db.with_name(db.name + "-wal")):
        if f.exists():
            assert body[:40].encode() not in f.read_bytes()
    assert pair.private_path.parent == engine.paths.keys_dir


async def test_authorized_keys_for_a_deployment(tmp_path, xdg):
    eng = await Engine.open(write_profile(tmp_path, overrides={
        "deployments": [{"name": "debian12", "authorized_keys": [PROFILE_KEY]}]}))
    try:
        keys = await authorized_keys_for(eng, "debian12")
        operator = await operator_key(eng)
        assert keys == [PROFILE_KEY, operator.public]
        assert await authorized_keys_for(eng, "rocky9") == [operator.public]
        with pytest.raises(UnknownTarget):
            await authorized_keys_for(eng, "nope")
    finally:
        await eng.close()


async def test_the_profiles_operator_identity_is_used(tmp_path, xdg):
    own = KeyStore(tmp_path / "own")
    pair, _ = own.generate("id_ed25519")
    os.remove(pair.private_path.with_name("id_ed25519.pub"))  # derived from the private key
    eng = await Engine.open(write_profile(tmp_path, overrides={
        "operator": {"ssh": {"identity": str(pair.private_path)}}}))
    try:
        op = await operator_key(eng)
        assert op.public.split()[:2] == pair.public.split()[:2]
        assert not (eng.paths.keys_dir / "operator").exists()  # nothing generated
    finally:
        await eng.close()
