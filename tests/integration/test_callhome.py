"""Call-home over the real HTTP service: the machine becomes provisioned, the node is
registered and its host keys pinned (fingerprints checked against ssh-keygen), all
in one transaction; every bad token is a 403 with an event and nothing registered."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from fleet.boot import callhome
from fleet.core import lifecycle as lc
from fleet.core.model import MachineState
from fleet.errors import BadInput
from support.boot_lab import MAC, MAC2, close_lab, open_lab

SSH_KEYGEN = "/usr/bin/ssh-keygen"


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = await open_lab(tmp_path)
    yield lab
    await close_lab(lab)


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory) -> list[tuple[str, str]]:
    """[(public key line, ssh-keygen's SHA256 fingerprint)] for ed25519 and ecdsa keys."""
    folder = tmp_path_factory.mktemp("hostkeys")
    out = []
    for kind in ("ed25519", "ecdsa"):
        path = folder / f"ssh_host_{kind}_key"
        subprocess.run([SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", f"root@{kind}",
                        "-f", str(path)], check=True)
        line = Path(f"{path}.pub").read_text().strip()
        listed = subprocess.run([SSH_KEYGEN, "-lf", f"{path}.pub"], check=True,
                                capture_output=True, text=True).stdout.split()
        out.append((line, listed[1]))
    return out


async def provisioning(lab, mac=MAC, hostname="web7", address="10.91.0.50",
                       deployment="debian12"):
    await lab.leased(mac, deployment, hostname, address)
    r = await lab.boot(mac)
    assert r.text.startswith("#!ipxe\necho fleet: installing")
    m = await lab.engine.machine(mac)
    assert m.state is MachineState.PROVISIONING
    return m


def body(token, host_keys, hostname="web7", address="10.91.0.50"):
    return {"token": token, "hostname": hostname, "address": address,
            "host_keys": [line for line, _ in host_keys]}


async def test_callhome_registers_the_node_and_pins_its_keys(lab, host_keys):
    m = await provisioning(lab)
    token = lab.engine.callhome_token(m)
    r = await lab.client.post("/api/callhome", json=body(token, host_keys))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["node"] == "web7" and answer["address"] == "10.91.0.50"
    m = await lab.engine.machine(MAC)
    assert m.state is MachineState.PROVISIONED and m.lease.token_used_at is not None
    node = await lab.engine.node("web7")
    assert node.source == "callhome" and node.mac == MAC and node.site == "lab"
    assert node.address == "10.91.0.50" and node.labels == {"deployment": "debian12"}
    assert node.registered_at is not None
    pinned = {k.fingerprint for k in node.host_keys}
    assert pinned == {fp for _, fp in host_keys}  # what ssh-keygen -l says
    assert {k.source for k in node.host_keys} == {"callhome"}
    assert {k.openssh for k in node.host_keys} == {" ".join(l.split()[:2]) for l, _ in host_keys}
    provisioned = (await lab.events_of("machine.provisioned"))[0]
    assert "web7" in provisioned.message and "provisioned debian12 in" in provisioned.message
    assert [e.kind for e in await lab.engine.events(10, subject="web7")] == [
        "node.registered", "node.keys_pinned"]
    pinned_event = (await lab.events_of("node.keys_pinned"))[0]
    assert sorted(pinned_event.data["fingerprints"]) == sorted(fp for _, fp in host_keys)
    for e in await lab.engine.events(100):
        assert token not in e.message and token not in str(e.data)

    # the same token again: 403, an event, nothing changes
    before = await lab.engine.node("web7")
    r = await lab.client.post("/api/callhome", json=body(token, host_keys[:1]))
    assert r.status_code == 403 and "already used" in r.text
    rejected = await lab.events_of("callhome.rejected")
    assert len(rejected) == 1 and rejected[0].subject == MAC
    assert rejected[0].data["reason"] == "the token was already used"
    assert rejected[0].data["peer"] == "127.0.0.1" and rejected[0].data["lease_id"] == m.lease.id
    assert (await lab.engine.node("web7")).host_keys == before.host_keys

    # provisioned: the next boot is from the local disk
    assert "sanboot --no-describe --drive 0x80" in (await lab.boot()).text


async def test_bad_tokens_are_refused_with_events_and_nothing_registered(lab, host_keys):
    a = await provisioning(lab)
    b = await provisioning(lab, MAC2, hostname="web8", address=None)
    token_a = lab.engine.callhome_token(a)
    token_b = lab.engine.callhome_token(b)
    forged = f"{b.lease.id}.{token_a.split('.', 1)[1]}"  # a's signature, b's lease
    template_b = callhome.template_token(lab.engine, b)
    cases = [
        (f"{a.lease.id}.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "token does not match its lease"),
        (forged, "token does not match its lease"),
        ("424242.abcdef", "no such lease"),
        ("nodot", "malformed token"),
        (template_b, "token does not match its lease"),  # a template token is no call-home token
    ]
    for token, reason in cases:
        r = await lab.client.post("/api/callhome", json=body(token, host_keys, "web8"))
        assert r.status_code == 403, token
        last = (await lab.events_of("callhome.rejected"))[-1]
        assert last.data["reason"] == reason, token
        assert token not in last.message and token not in str(last.data)
    rejected = await lab.events_of("callhome.rejected")
    assert len(rejected) == len(cases)
    assert rejected[1].subject == MAC2 and rejected[1].data["lease_id"] == b.lease.id
    assert rejected[3].subject == "127.0.0.1"  # no lease claimed: the peer
    # an ended lease: release b, then its own token
    await lab.engine.release(MAC2)
    r = await lab.client.post("/api/callhome", json=body(token_b, host_keys, "web8"))
    assert r.status_code == 403
    assert (await lab.events_of("callhome.rejected"))[-1].data["reason"] == "the lease has ended"
    # nothing was registered or changed
    assert [n.name for n in await lab.engine.nodes()] == []
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING
    assert (await lab.engine.machine(MAC2)).state is MachineState.DISCOVERED
    # a's own token still works afterwards (rejections did not spend it)
    r = await lab.client.post("/api/callhome", json=body(token_a, host_keys))
    assert r.status_code == 200


async def test_token_of_a_machine_that_is_only_leased_works_and_peer_address_is_used(
        lab, host_keys):
    await lab.leased(MAC, "rocky9", "db3", None)  # no install script fetched, no address
    m = await lab.engine.machine(MAC)
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(m),
                                                          host_keys, "db3", ""))
    assert r.status_code == 200, r.text
    node = await lab.engine.node("db3")
    assert node.address == "127.0.0.1"  # the lease had none: where the call came from
    registered = (await lab.events_of("node.registered"))[0]
    assert registered.data["peer"] == "127.0.0.1" and registered.data["reported_address"] is None


async def test_callhome_of_a_failed_machine_is_refused(lab, host_keys):
    m = await provisioning(lab)
    await lab.engine.advance(MAC, lc.Fail("disk on fire"))
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(m),
                                                          host_keys))
    assert r.status_code == 403 and "failed" in r.text
    assert await lab.engine.nodes() == []


async def test_registration_replaces_the_keys_of_a_reinstalled_node(lab, host_keys):
    m = await provisioning(lab)
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(m),
                                                          host_keys))
    assert r.status_code == 200
    released = await lab.engine.release_outcome(MAC)
    assert released.retired == "web7" and await lab.engine.find_node("web7") is None
    m = await provisioning(lab)  # a new lease, same hostname
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(m),
                                                          host_keys[1:]))
    assert r.status_code == 200
    node = await lab.engine.node("web7")
    assert [k.fingerprint for k in node.host_keys] == [host_keys[1][1]]
    assert (await lab.events_of("node.registered"))[-1].data["replaced"] is None


@pytest.mark.parametrize("payload, status, reason", [
    ({"token": "1.a", "hostname": "web7"}, 400, "missing fields: host_keys"),
    ({"token": "1.a", "hostname": "web7", "host_keys": ["x"], "extra": 1}, 400,
     "unknown fields: extra"),
    ({"token": "1.a", "hostname": "web 7", "host_keys": ["x"]}, 400, "not a valid hostname"),
    ({"token": "1.A", "hostname": "web7", "host_keys": ["x"]}, 400, "token must be"),
    ({"token": "1.a", "hostname": "web7", "address": "10.0.0.300", "host_keys": ["x"]}, 400,
     "not an IPv4"),
    ({"token": "1.a", "hostname": "web7", "host_keys": []}, 400, "non-empty list"),
    ({"token": "1.a", "hostname": "web7", "host_keys": ["ssh-ed25519 AAAAnotakey"]}, 400,
     "not a valid ssh-ed25519 key"),
    ({"token": "1.a", "hostname": "web7", "host_keys": ["ssh-foo AAAA"]}, 400,
     "unsupported key type"),
    ({"token": "1.a", "hostname": "web7", "host_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]},
     400, "unsupported key type"),
    ([1, 2], 400, "must be a JSON object"),
])
async def test_malformed_callhomes_are_400_with_an_event(lab, payload, status, reason):
    m = await provisioning(lab)
    r = await lab.client.post("/api/callhome", json=payload)
    assert r.status_code == status and reason in r.text, r.text
    invalid = await lab.events_of("callhome.invalid")
    assert len(invalid) == 1 and reason in invalid[0].data["reason"]
    assert await lab.engine.nodes() == []
    assert (await lab.engine.machine(m.mac)).state is MachineState.PROVISIONING


async def test_key_of_the_wrong_type_and_duplicate_types_are_400(lab, host_keys):
    m = await provisioning(lab)
    token = lab.engine.callhome_token(m)
    ed, ec = host_keys[0][0], host_keys[1][0]
    mislabeled = "ssh-ed25519 " + ec.split()[1]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    for keys, reason in (([mislabeled], "not a valid ssh-ed25519 key"),
                         ([ed, other], "two different ssh-ed25519 keys")):
        r = await lab.client.post("/api/callhome", json={"token": token, "hostname": "web7",
                                                         "host_keys": keys})
        assert r.status_code == 400 and reason in r.text, r.text
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING


async def test_wrong_content_type_and_bad_json(lab):
    r = await lab.client.post("/api/callhome", content=b'{"token": "1.a"}',
                              headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = await lab.client.post("/api/callhome", content=b'{"token": ',
                              headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.text
    assert len(await lab.events_of("callhome.invalid")) == 2


async def test_register_callhome_directly_in_one_transaction(lab, host_keys, monkeypatch):
    """If pinning fails midway, the machine is not provisioned and no node exists."""
    m = await provisioning(lab)
    store = lab.engine.store

    async def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.nodes, "pin_keys", boom)
    with pytest.raises(RuntimeError):
        await callhome.register_callhome(lab.engine, body(lab.engine.callhome_token(m),
                                                          host_keys), "10.91.0.77")
    assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONING
    assert await store.nodes.get("web7") is None
    assert await lab.events_of("machine.provisioned") == []
    monkeypatch.undo()
    node = await callhome.register_callhome(lab.engine, body(lab.engine.callhome_token(m),
                                                             host_keys), "10.91.0.77",
                                            site="lab")
    assert node.name == "web7" and len(node.host_keys) == 2


async def test_rejection_events_are_rate_limited_per_peer(lab, host_keys):
    lab.http.limiter.burst = 3
    for _ in range(6):
        r = await lab.client.post("/api/callhome", json=body("7.abc", host_keys))
        assert r.status_code == 403
    assert len(await lab.events_of("callhome.rejected")) == 3


async def test_a_name_held_by_another_provisioned_machine_is_a_409(lab, host_keys):
    a = await provisioning(lab)
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(a),
                                                          host_keys))
    assert r.status_code == 200
    with pytest.raises(BadInput, match=f"hostname web7 is in use: {MAC} holds it"):
        await lab.leased(MAC2, "debian12", "web7")
    # a store written before leases checked names can still hold such a pair:
    # the call-home refuses to take the name over
    b = await provisioning(lab, MAC2, hostname="web8")
    await lab.engine.store.conn.execute("UPDATE leases SET hostname='web7' WHERE id=?",
                                        (b.lease.id,))
    b = await lab.engine.machine(MAC2)
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(b),
                                                          host_keys[1:]))
    assert r.status_code == 409 and MAC in r.text
    node = await lab.engine.node("web7")
    assert node.mac == MAC and len(node.host_keys) == 2
    assert (await lab.engine.machine(MAC2)).state is MachineState.PROVISIONING
    assert (await lab.events_of("callhome.rejected"))[-1].data["status"] == 409
    # once the first machine is released, the second one may take the name
    await lab.engine.release(MAC)
    r = await lab.client.post("/api/callhome", json=body(lab.engine.callhome_token(b),
                                                          host_keys[1:]))
    assert r.status_code == 200
    assert (await lab.engine.node("web7")).mac == MAC2


async def test_concurrent_callhomes_with_one_token_register_once(lab, host_keys):
    import asyncio

    m = await provisioning(lab)
    token = lab.engine.callhome_token(m)
    answers = await asyncio.gather(*(
        lab.client.post("/api/callhome", json=body(token, host_keys)) for _ in range(8)))
    assert sorted(r.status_code for r in answers) == [200] + [403] * 7
    assert len(await lab.events_of("machine.provisioned")) == 1
    assert len(await lab.events_of("node.registered")) == 1
    assert len(await lab.events_of("callhome.rejected")) == 7


@pytest.mark.root
async def test_a_callhome_while_the_disk_is_full_is_a_503_and_works_after(tmp_path, xdg,
                                                                        host_keys):
    """The installer's call-home retries: a full disk is 'try again later', not a
    500, and nothing is half-registered."""
    import sqlite3

    from support.faults import fill, tmpfs

    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        lab = await open_lab(tmp_path, {"store": str(disk / "t.db")})
        try:
            m = await provisioning(lab)
            other = sqlite3.connect(disk / "t.db")  # keeps the WAL index in place
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            filler = fill(disk)
            r = await lab.client.post("/api/callhome",
                                      json=body(lab.engine.callhome_token(m), host_keys))
            assert r.status_code == 503 and r.headers["retry-after"] == "30", r.text
            assert await lab.engine.nodes() == []
            filler.unlink()
            other.close()
            r = await lab.client.post("/api/callhome",
                                      json=body(lab.engine.callhome_token(m), host_keys))
            assert r.status_code == 200, r.text
            assert (await lab.engine.machine(MAC)).state is MachineState.PROVISIONED
        finally:
            await close_lab(lab)
