"""A remote site's records back into objects (fleet.records.machine_from,
node_from): what the console's replica holds is what the site's store held."""

from __future__ import annotations

from fleet import records as rec
from fleet.core.model import (FirmwareArch, HostKey, Lease, Machine, MachineState, Node,
                              Reachability)

T = 1796590318.5


def test_a_machine_record_reads_back_as_the_machine():
    m = Machine(mac="52:54:00:00:00:01", state=MachineState.PROVISIONING, state_since=T,
                first_seen=T - 60, last_seen=T, arch=FirmwareArch.UEFI_X64,
                nic_vendor="Intel", distributor="rack2", last_ip="10.92.0.50",
                stage="ipxe", info={"serial": "S1"},
                lease=Lease(7, "52:54:00:00:00:01", "debian12", "web7", "10.92.0.7", 0.0))
    assert rec.machine_from(rec.machine(m, T)) == m


def test_an_unknown_arch_reads_back_as_unknown_not_an_error():
    record = rec.machine(Machine(mac="52:54:00:00:00:02"), T) | {"arch": "risc-v-from-later"}
    assert rec.machine_from(record).arch is FirmwareArch.UNKNOWN


def test_a_node_record_keeps_the_host_keys_the_site_pinned():
    key = HostKey("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIBody", "SHA256:abc", "callhome", T)
    n = Node(name="web7", site="rack2", address="10.92.0.7", user="root", source="callhome",
             mac="52:54:00:00:00:01", registered_at=T, host_keys=(key,),
             reachability=Reachability.REACHABLE, last_seen=T)
    back = rec.node_from(rec.node(n))
    assert back.host_keys == (HostKey("ssh-ed25519", key.key, "SHA256:abc", "site"),)
    assert (back.site, back.address, back.reachability, back.registered_at) == (
        "rack2", "10.92.0.7", Reachability.REACHABLE, T)
