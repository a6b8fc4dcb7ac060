"""The demo's second site: the bundled demo names it, and the profile its own
serve and agent run on is derived from the demo's (that site alone, served
there, with the demo's operator key and its own HTTP port)."""

from __future__ import annotations

from pathlib import Path

from fleet.profile import load_profile
from fleet.profile.locate import bundled_dir
from fleet.sim.profiles import agent_site_profile, load_data, write_demo_profile, \
    write_profile_data

SECOND = {"dhcp": 40001, "pxe": 40002, "tftp": 40003, "http": 40004}


def test_the_bundled_demo_has_a_second_site_behind_the_demo_jump() -> None:
    p = load_profile(bundled_dir() / "demo.yaml")
    assert [s.name for s in p.sites] == ["demo", "demo-east"]
    east = p.site("demo-east")
    assert east.agent is not None and east.agent.via == "demo-jump"
    assert east.agent.host == "127.78.0.3" and str(east.subnets[0]) == "127.78.0.0/16"
    assert east.agent.command == "fleet --headless --profile demo-east agent"
    ports = (east.distributor.ports, p.site("demo").distributor.ports)
    assert not {ports[0].dhcp, ports[0].pxe, ports[0].tftp, ports[0].http} & \
        {ports[1].dhcp, ports[1].pxe, ports[1].tftp, ports[1].http}


def test_a_demo_variant_has_the_second_site_only_when_asked(tmp_path: Path) -> None:
    one = load_profile(write_demo_profile(tmp_path, name="one", subnet_octet=150))
    assert [s.name for s in one.sites] == ["demo"] and [j.name for j in one.jumps] == \
        ["demo-jump"]
    two = load_profile(write_demo_profile(tmp_path, name="two", subnet_octet=150,
                                          second_site=SECOND))
    east = two.site("demo-east")
    assert str(east.subnets[0]) == "127.151.0.0/16" and east.agent.host == "127.151.0.3"
    assert two.jump("demo-east-jump").address == "127.151.0.2"
    assert east.distributor.ports.http == 40004


def test_the_second_sites_own_profile(tmp_path: Path) -> None:
    demo = write_demo_profile(tmp_path, subnet_octet=150, ports={
        "dhcp": 40011, "pxe": 40012, "tftp": 40013, "http": 40014}, second_site=SECOND)
    data = agent_site_profile(load_data(demo), "demo-east", folder=tmp_path,
                              identity=tmp_path / "keys" / "operator")
    path = write_profile_data(tmp_path / "east" / "demo-east.yaml", data)
    p = load_profile(path)  # templates found from elsewhere: their paths are absolute
    assert p.name == "demo-east"
    assert [s.name for s in p.sites] == ["demo-east"] and p.sites[0].agent is None
    assert [j.name for j in p.jumps] == ["demo-east-jump"]
    assert p.operator.ssh.identity is not None
    assert Path(p.operator.ssh.identity) == tmp_path / "keys" / "operator"
    assert all(":40004/" in d.kernel and ":40004/" in d.initrd for d in p.deployments)
    assert p.demo is not None and p.demo.seed == 2  # other MACs than the first site's
    assert p.store is None  # the site's own data dir
