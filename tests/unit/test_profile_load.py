"""Valid profiles: the shipped ones, defaults, paths, jump chains, resolution."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fleet
from fleet.profile import (
    DemoConfig,
    DistributorConfig,
    JumpConfig,
    Ports,
    Profile,
    ProfileError,
    SshSettings,
    bundled_dir,
    load_profile,
    parse_profile,
    resolve_profile,
)

REPO = Path(fleet.__file__).resolve().parent.parent
PROFILES = REPO / "profiles"


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- shipped profiles


def test_demo_profile_loads() -> None:
    p = load_profile(PROFILES / "demo.yaml")
    assert p.name == "demo" and p.version == 1
    assert p.store is None
    assert p.operator.ssh.host_keys == "strict"
    site = p.site("demo")
    assert site.subnets == (ipaddress.IPv4Network("127.77.0.0/16"),)
    assert site.jumps == ("demo-jump",)
    d = site.distributor
    assert d is not None and d.address == "127.0.0.1"
    assert d.ports == Ports(dhcp=6767, pxe=14011, tftp=6969, http=8067)
    assert all(port > 1024 for port in (d.ports.dhcp, d.ports.pxe, d.ports.tftp, d.ports.http))
    jump = p.jump("demo-jump")
    assert (jump.address, jump.port, jump.user) == ("127.77.0.2", 2222, "root")
    assert {dep.name: dep.kind for dep in p.deployments} == {"debian12": "preseed", "rocky9": "kickstart"}
    for dep in p.deployments:
        assert dep.template is not None and dep.template.is_file()
        assert dep.template.parent == PROFILES / "templates"
    assert p.demo == DemoConfig(machines=24, misbehave=True)


def test_lab_example_loads() -> None:
    p = load_profile(PROFILES / "lab.example.yaml")
    assert p.name == "lab"
    assert p.store is None  # the default: <data dir>/lab.db, not beside the profile
    assert [j.name for j in p.jumps] == ["gw1", "gw2", "inner"]
    assert p.jump("gw2") == JumpConfig("gw2", "10.90.0.3", 22, "root", None)
    assert p.jump_chain("inner") == (p.jump("gw1"), p.jump("inner"))
    assert p.operator.beachheads == (
        ipaddress.IPv4Network("10.1.0.121/32"),
        ipaddress.IPv4Network("10.5.0.0/24"),
    )
    site = p.site("rack1")
    assert site.jumps == ("gw1", "gw2")
    assert site.distributor is not None
    assert (site.distributor.interface, site.distributor.address) == ("br0", "10.77.0.1")
    web1 = p.node("web1")
    assert (web1.site, web1.address, web1.public_ipv4, web1.ipv6) == ("rack1", "10.91.0.11", "203.0.113.10", "2001:db8::11")
    assert dict(web1.labels) == {"role": "web", "tier": "front"}
    assert p.node("db1").user == "admin"
    for dep in p.deployments:
        assert dep.template is not None and dep.template.is_file()
        assert dep.authorized_keys


@pytest.mark.parametrize("template", ["debian12.preseed", "rocky9.ks"])
def test_templates_carry_the_placeholders(template: str) -> None:
    text = (PROFILES / "templates" / template).read_text()
    for placeholder in ("hostname", "address", "callhome_url", "token", "authorized_keys"):
        assert "{{ %s }}" % placeholder in text
    assert "curl -fsS -X POST {{ callhome_url }} -H 'Content-Type: application/json' --data @/tmp/callhome.json" in text
    assert "/etc/ssh/ssh_host_*_key.pub" in text


def test_shipped_profiles_are_hashable_values() -> None:
    a = load_profile("demo")
    b = load_profile("demo")
    assert a == b and hash(a) == hash(b)


# --------------------------------------------------------------------------- defaults


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(
        tmp_path,
        """\
        version: 1
        operator:
          ssh: {user: ops}
        jumps:
          - {name: gw1, address: gw1.example.net}
        sites:
          - name: s
            distributor: {address: 10.0.0.1}
        deployments:
          - {name: d, kind: script}
        nodes:
          - {name: n, address: 10.0.0.9}
        demo: {}
        """,
        name="my-lab.yaml",
    )
    p = load_profile(path)
    assert p.name == "my-lab"  # from the file name
    assert p.store is None
    assert p.stall_after == 1800
    assert p.operator.ssh == SshSettings(
        user="ops",
        identity=None,
        known_hosts=(tmp_path / "home" / ".ssh" / "known_hosts",),
        host_keys="strict",
        connect_timeout=5.0,
    )
    assert p.operator.beachheads == ()
    assert p.jump("gw1") == JumpConfig("gw1", "gw1.example.net", 22, "ops", None)
    assert p.site("s").subnets == () and p.site("s").jumps == ()
    assert p.site("s").distributor == DistributorConfig(
        interface=None,
        address="10.0.0.1",
        ports=Ports(67, 4011, 69, 8080),
        enabled=True,
        proxy_mode="port4011",
        reply_delay_ms=0,
        vendor_classes=("PXEClient", "HTTPClient"),
        hold="poll",
        poll_seconds=10,
        tftp_root=None,
        ipxe_dir=None,
    )
    d = p.deployment("d")
    assert (d.kernel, d.initrd, d.cmdline, d.template, d.authorized_keys, d.post_boot) == (None, None, "", None, (), ())
    n = p.node("n")
    assert (n.site, n.public_ipv4, n.ipv6, n.port, n.user, dict(n.labels)) == (None, None, None, 22, None, {})
    assert p.demo == DemoConfig(machines=24, misbehave=True, install_seconds=20.0, seed=1, options={})


def test_minimal_profile(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "version: 1\nname: m\n"))
    assert (p.jumps, p.sites, p.deployments, p.nodes, p.demo) == ((), (), (), (), None)


def test_null_sections_are_defaults(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "version: 1\njumps:\nsites:\noperator:\n"))
    assert p.jumps == () and p.sites == () and p.operator.ssh.user == "root"


def test_relative_paths_resolve_against_profile_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = tmp_path / "conf"
    (conf / "tpl").mkdir(parents=True)
    (conf / "tpl" / "x.ks").write_text("text\n")
    (conf / "post.sh").write_text("#!/bin/sh\n")
    write(
        conf,
        """\
        version: 1
        store: ./state/lab.db
        operator:
          ssh:
            identity: ~/.ssh/id_ed25519
            known_hosts: [keys/known_hosts, /etc/ssh/ssh_known_hosts]
        sites:
          - name: s
            distributor: {address: 10.0.0.1, tftp_root: ../tftp, ipxe_dir: ipxe}
        deployments:
          - name: d
            kind: kickstart
            template: tpl/x.ks
            post_boot: [post.sh]
        """,
    )
    monkeypatch.chdir(tmp_path)  # cwd is not the profile's folder
    p = load_profile(Path("conf/p.yaml"))
    assert p.path == conf / "p.yaml"
    assert p.store == conf / "state" / "lab.db"
    assert p.operator.ssh.identity == tmp_path / "home" / ".ssh" / "id_ed25519"
    assert p.operator.ssh.known_hosts == (conf / "keys" / "known_hosts", Path("/etc/ssh/ssh_known_hosts"))
    dist = p.site("s").distributor
    assert dist is not None
    assert (dist.tftp_root, dist.ipxe_dir) == (tmp_path / "tftp", conf / "ipxe")
    assert p.deployment("d").template == conf / "tpl" / "x.ks"
    assert p.deployment("d").post_boot == (conf / "post.sh",)


def test_values_are_normalised(tmp_path: Path) -> None:
    p = load_profile(
        write(
            tmp_path,
            """\
            version: 1
            x-common: &common {port: 2200, user: ops}
            operator:
              beachheads: [10.1.0.121]
            jumps:
              - {<<: *common, name: v6, address: "2001:DB8:0:0::1"}
            nodes:
              - name: n
                address: 10.0.0.9
            """,
        )
    )
    assert p.jump("v6") == JumpConfig("v6", "2001:db8::1", 2200, "ops", None)
    assert p.operator.beachheads == (ipaddress.IPv4Network("10.1.0.121/32"),)


def test_ipv6_that_yaml_reads_as_base60_int(tmp_path: Path) -> None:
    # YAML 1.1 reads 1:2:3:4:5:6:7:8 as a base-60 integer; the source text is what counts.
    p = load_profile(write(tmp_path, "version: 1\nnodes:\n  - {name: n, ipv6: 1:2:3:4:5:6:7:8}\n"))
    assert p.node("n").ipv6 == "1:2:3:4:5:6:7:8"


def test_labels_take_numbers_as_text(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "version: 1\nnodes:\n  - {name: n, address: 10.0.0.1, labels: {rack: 3, u: 1.5}}\n"))
    assert dict(p.node("n").labels) == {"rack": "3", "u": "1.5"}


def test_demo_options_take_anything(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "version: 1\ndemo:\n  options: {failures: [3, 7], nested: {a: 1}}\n"))
    assert p.demo is not None
    assert p.demo.options["failures"] == (3, 7)
    assert p.demo.options["nested"]["a"] == 1


def test_line_of(tmp_path: Path) -> None:
    p = load_profile(PROFILES / "demo.yaml")
    line = p.line_of("sites[0].distributor.ports.http")
    assert line is not None
    assert "http: 8067" in (PROFILES / "demo.yaml").read_text().splitlines()[line - 1]
    assert p.line_of("no.such.key") is None


def test_parse_profile_from_text(tmp_path: Path) -> None:
    p = parse_profile("version: 1\nname: inline\n", tmp_path / "x.yaml")
    assert p.name == "inline" and p.path == tmp_path / "x.yaml"
    with pytest.raises(ProfileError) as info:
        parse_profile("version: 1\nname: [1]\n", tmp_path / "x.yaml", file="<stdin>")
    assert str(info.value).startswith("<stdin>:2: name: ")


# --------------------------------------------------------------------------- helpers


def _chain_profile() -> Profile:
    return Profile(
        version=1,
        name="c",
        path=Path("/x.yaml"),
        jumps=(
            JumpConfig("deep", "10.0.0.3", via="inner"),
            JumpConfig("gw1", "10.0.0.1"),
            JumpConfig("inner", "10.0.0.2", via="gw1"),
        ),
    )


def test_jump_chain_outermost_first() -> None:
    p = _chain_profile()
    assert [j.name for j in p.jump_chain("gw1")] == ["gw1"]
    assert [j.name for j in p.jump_chain("inner")] == ["gw1", "inner"]
    assert [j.name for j in p.jump_chain("deep")] == ["gw1", "inner", "deep"]


def test_lookup_helpers_raise_keyerror() -> None:
    p = _chain_profile()
    for helper in (p.jump, p.site, p.deployment, p.node, p.jump_chain):
        with pytest.raises(KeyError):
            helper("nope")


# --------------------------------------------------------------------------- resolution


def test_resolve_demo_is_bundled() -> None:
    assert bundled_dir() == PROFILES
    assert resolve_profile("demo") == PROFILES / "demo.yaml"
    assert resolve_profile("demo.yaml") == PROFILES / "demo.yaml"
    assert resolve_profile("lab.example") == PROFILES / "lab.example.yaml"
    assert load_profile("demo").name == "demo"


def test_resolve_existing_path_is_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n", name="anything.yml")
    assert resolve_profile(path) == path
    assert resolve_profile(str(path)) == path


def test_resolve_user_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "cfg" / "fleet" / "profiles"
    user.mkdir(parents=True)
    write(user, "version: 1\nname: mine\n", name="mine.yaml")
    assert resolve_profile("mine") == user / "mine.yaml"
    assert load_profile("mine").name == "mine"


def test_resolve_unknown_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError) as info:
        resolve_profile("nosuch")
    text = str(info.value)
    assert text.startswith("fleet: no such profile 'nosuch' (looked for ")
    assert text.endswith("`fleet --headless profile new nosuch` writes a starter there")
    assert str(PROFILES / "nosuch.yaml") in text
    assert str(tmp_path / "cfg" / "fleet" / "profiles" / "nosuch.yaml") in text


def test_missing_path_is_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "missing.yaml")
    assert str(info.value).startswith(f"fleet: no such profile '{tmp_path / 'missing.yaml'}'")


def test_directory_is_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)


# --------------------------------------------------------------------------- import contract


def test_profile_import_does_not_pull_textual() -> None:
    code = (
        "import sys\n"
        "from fleet.profile import load_profile\n"
        "load_profile('demo')\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
