"""Malformed profiles: every problem is reported as FILE:LINE: key: message, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.profile import ProfileError, ProfileIssue, load_profile

# A valid profile the cases below break in one place each (line numbers matter:
# cases that edit it are written out in full instead).
GOOD = """\
version: 1
name: t
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def issues_of(path: Path) -> list[ProfileIssue]:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value.issues


# (id, profile text, line, key, message substring). Each case has exactly one issue.
CASES = [
    (
        "unknown-key-suggests",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
            adress: 10.0.0.2
        """,
        5,
        "jumps[0].adress",
        "unknown key 'adress' (did you mean 'address'?)",
    ),
    (
        "unknown-top-key-lists-known",
        """\
        version: 1
        zzz: 1
        """,
        2,
        "zzz",
        "known keys: version, name",
    ),
    (
        "list-where-mapping",
        """\
        version: 1
        operator:
          - ssh
        """,
        2,
        "operator",
        "expected a mapping (ssh, beachheads), got a list",
    ),
    (
        "mapping-where-list",
        """\
        version: 1
        jumps:
          gw1: {address: 10.0.0.1}
        """,
        2,
        "jumps",
        "expected a list of jumps, got a mapping",
    ),
    (
        "string-port",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
            port: "22"
        """,
        5,
        "jumps[0].port",
        "got string '22'",
    ),
    (
        "bool-port-yes",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
            port: yes
        """,
        5,
        "jumps[0].port",
        "got boolean yes",
    ),
    (
        "port-zero",
        """\
        version: 1
        sites:
          - name: s
            distributor:
              address: 10.0.0.1
              ports: {http: 0}
        """,
        6,
        "sites[0].distributor.ports.http",
        "0 is outside 1..65535",
    ),
    (
        "port-too-big",
        """\
        version: 1
        nodes:
          - name: n
            address: 10.0.0.5
            port: 65536
        """,
        5,
        "nodes[0].port",
        "65536 is outside 1..65535",
    ),
    (
        "missing-required",
        """\
        version: 1
        jumps:
          - name: gw1
            port: 22
        """,
        3,
        "jumps[0].address",
        "missing required key 'address'",
    ),
    (
        "required-null",
        """\
        version: 1
        jumps:
          - name:
            address: 10.0.0.1
        """,
        3,
        "jumps[0].name",
        "'name' needs a value",
    ),
    (
        "bad-ipv4",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.300
        """,
        4,
        "jumps[0].address",
        "not an IPv4 address: '10.0.0.300'",
    ),
    (
        "bad-ipv6",
        """\
        version: 1
        nodes:
          - name: n
            ipv6: 2001:db8::zz
        """,
        4,
        "nodes[0].ipv6",
        "not an IPv6 address",
    ),
    (
        "cidr-host-bits",
        """\
        version: 1
        sites:
          - name: s
            subnets: [10.91.0.1/24]
        """,
        4,
        "sites[0].subnets[0]",
        "10.91.0.1/24 has host bits set (did you mean 10.91.0.0/24?)",
    ),
    (
        "cidr-bad-prefix",
        """\
        version: 1
        operator:
          beachheads:
            - 10.5.0.0/24
            - 10.6.0.0/40
        """,
        5,
        "operator.beachheads[1]",
        "bad prefix length '40'",
    ),
    (
        "duplicate-jump-name",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
          - name: gw1
            address: 10.0.0.2
        """,
        5,
        "jumps[1].name",
        "duplicate jump name 'gw1' (first defined at line 3)",
    ),
    (
        "duplicate-node-name",
        """\
        version: 1
        nodes:
          - {name: a, address: 10.0.0.1}
          - {name: b, address: 10.0.0.2}
          - {name: a, address: 10.0.0.3}
        """,
        5,
        "nodes[2].name",
        "duplicate node name 'a' (first defined at line 3)",
    ),
    (
        "duplicate-yaml-key",
        """\
        version: 1
        name: a
        name: b
        """,
        3,
        "name",
        "duplicate key 'name' (first at line 2)",
    ),
    (
        "undefined-via",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
          - name: inner
            address: 10.0.1.1
            via: gw2
        """,
        7,
        "jumps[1].via",
        "unknown jump 'gw2' (did you mean 'gw1'?)",
    ),
    (
        "undefined-site-jump",
        """\
        version: 1
        jumps:
          - {name: gw1, address: 10.0.0.1}
        sites:
          - name: s
            jumps: [gw1, bastion]
        """,
        6,
        "sites[0].jumps[1]",
        "unknown jump 'bastion' (defined jumps: gw1)",
    ),
    (
        "undefined-node-site",
        """\
        version: 1
        nodes:
          - name: n
            site: rack9
            address: 10.0.0.5
        """,
        4,
        "nodes[0].site",
        "unknown site 'rack9' (no sites are defined)",
    ),
    (
        "via-cycle",
        """\
        version: 1
        jumps:
          - {name: gw1, address: 10.0.0.1, via: inner}
          - {name: inner, address: 10.0.0.2, via: gw1}
        """,
        3,
        "jumps[0].via",
        "gw1 -> inner -> gw1",
    ),
    (
        "via-self",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
            via: gw1
        """,
        5,
        "jumps[0].via",
        "gw1 -> gw1",
    ),
    (
        "unsupported-version",
        """\
        name: x
        version: 2
        jumps: nonsense
        """,
        2,
        "version",
        "unsupported profile version 2",
    ),
    (
        "version-string",
        """\
        version: "1"
        """,
        1,
        "version",
        "got string '1'",
    ),
    (
        "missing-version",
        """\
        # a comment first
        name: x
        """,
        2,
        "version",
        "missing required key 'version'",
    ),
    (
        "broken-yaml",
        """\
        version: 1
        jumps:
          - name: gw1
             address: 10.0.0.1
        """,
        4,
        "",
        "invalid YAML",
    ),
    (
        "broken-yaml-flow",
        """\
        version: 1
        sites:
          - name: s
            subnets: [10.0.0.0/24
        nodes: []
        """,
        5,
        "",
        "invalid YAML",
    ),
    (
        "two-documents",
        """\
        version: 1
        ---
        version: 1
        """,
        2,
        "",
        "expected a single document",
    ),
    (
        "duplicate-key-in-anchor-reported-once",
        """\
        version: 1
        x-jump: &j {address: 10.0.0.1, port: 22, port: 23}
        jumps:
          - {<<: *j, name: a}
          - {<<: *j, name: b}
        """,
        2,
        "x-jump.port",
        "duplicate key 'port' (first at line 2)",
    ),
    ("empty-file", "", 1, "", "the profile is empty"),
    ("only-comments", "# nothing here\n\n", 1, "", "the profile is empty"),
    ("top-level-list", "- version: 1\n", 1, "", "must be a mapping"),
    ("top-level-scalar", "hello\n", 1, "", "got string 'hello'"),
    (
        "missing-template",
        """\
        version: 1
        deployments:
          - name: d
            kind: preseed
            template: templates/nope.preseed
        """,
        5,
        "deployments[0].template",
        "file not found:",
    ),
    (
        "node-address-public",
        """\
        version: 1
        nodes:
          - name: n
            address: 8.8.8.8
        """,
        4,
        "nodes[0].address",
        "8.8.8.8 is not a private IPv4 address",
    ),
    (
        "node-outside-site-subnets",
        """\
        version: 1
        sites:
          - name: rack1
            subnets: [10.91.0.0/24, 10.92.0.0/24]
        nodes:
          - name: n
            site: rack1
            address: 10.93.0.5
        """,
        8,
        "nodes[0].address",
        "10.93.0.5 is outside the subnets of site 'rack1' (10.91.0.0/24, 10.92.0.0/24)",
    ),
    (
        "host-keys-enum",
        """\
        version: 1
        operator:
          ssh:
            host_keys: accept_new
        """,
        4,
        "operator.ssh.host_keys",
        "not one of strict | accept-new; did you mean 'accept-new'?",
    ),
    (
        "connect-timeout-zero",
        """\
        version: 1
        operator:
          ssh:
            connect_timeout: 0
        """,
        4,
        "operator.ssh.connect_timeout",
        "must be more than 0",
    ),
    (
        "connect-timeout-negative",
        """\
        version: 1
        operator:
          ssh: {connect_timeout: -2.5}
        """,
        3,
        "operator.ssh.connect_timeout",
        "must be more than 0, got -2.5",
    ),
    (
        "name-bad-chars",
        """\
        version: 1
        sites:
          - name: rack 1/a
        """,
        3,
        "sites[0].name",
        "has characters other than A-Z a-z 0-9 . _ -",
    ),
    (
        "profile-name-bad-chars",
        """\
        version: 1
        name: "lab:prod"
        """,
        2,
        "name",
        "(':')",
    ),
    (
        "name-is-number",
        """\
        version: 1
        nodes:
          - name: 007
            address: 10.0.0.7
        """,
        3,
        "nodes[0].name",
        "got integer 007 (quote it: '007')",
    ),
    (
        "label-bool",
        """\
        version: 1
        nodes:
          - name: n
            address: 10.0.0.7
            labels:
              role: web
              backup: on
        """,
        7,
        "nodes[0].labels.backup",
        "got boolean on (quote it: 'on')",
    ),
    (
        "enabled-not-bool",
        """\
        version: 1
        sites:
          - name: s
            distributor:
              address: 10.0.0.1
              enabled: 1
        """,
        6,
        "sites[0].distributor.enabled",
        "expected true or false, got integer 1",
    ),
    (
        "udp-port-clash",
        """\
        version: 1
        sites:
          - name: s
            distributor:
              address: 10.0.0.1
              ports:
                dhcp: 6767
                pxe: 6767
        """,
        8,
        "sites[0].distributor.ports.pxe",
        "UDP port 6767 is also the dhcp port",
    ),
    (
        "proxy-mode-enum",
        """\
        version: 1
        sites:
          - name: s
            distributor: {address: 10.0.0.1, proxy_mode: proxy}
        """,
        4,
        "sites[0].distributor.proxy_mode",
        "not one of port4011 | direct",
    ),
    (
        "distributor-missing-address",
        """\
        version: 1
        sites:
          - name: s
            distributor:
              interface: br0
        """,
        4,
        "sites[0].distributor.address",
        "missing required key 'address'",
    ),
    (
        "deployment-kind",
        """\
        version: 1
        deployments:
          - name: d
            kind: autoyast
        """,
        4,
        "deployments[0].kind",
        "'autoyast' is not one of preseed | kickstart | cloud-init | script",
    ),
    (
        "authorized-key-garbage",
        """\
        version: 1
        deployments:
          - name: d
            kind: script
            authorized_keys:
              - not a key
        """,
        6,
        "deployments[0].authorized_keys[0]",
        "not an SSH public key line",
    ),
    (
        "item-not-mapping",
        """\
        version: 1
        sites:
          - rack1
        """,
        3,
        "sites[0]",
        "expected a site (a mapping with name, subnets, ...), got string 'rack1'",
    ),
    (
        "unknown-tag",
        """\
        version: 1
        jumps:
          - name: gw1
            address: 10.0.0.1
            port: !port 22
        """,
        5,
        "jumps[0].port",
        "unknown YAML tag '!port'",
    ),
    (
        "demo-unknown-key",
        """\
        version: 1
        demo:
          machines: 3
          machnes: 4
        """,
        4,
        "demo.machnes",
        "did you mean 'machines'?",
    ),
    (
        "stall-after-float",
        """\
        version: 1
        stall_after: 1.5
        """,
        2,
        "stall_after",
        "expected a number of seconds, got number 1.5",
    ),
    (
        "site-jump-listed-twice",
        """\
        version: 1
        jumps:
          - {name: gw1, address: 10.0.0.1}
        sites:
          - name: s
            jumps:
              - gw1
              - gw1
        """,
        8,
        "sites[0].jumps[1]",
        "gw1 is listed twice (first at line 7)",
    ),
    (
        "node-no-address",
        """\
        version: 1
        nodes:
          - name: lonely
            labels: {role: x}
        """,
        3,
        "nodes[0]",
        "needs at least one of address, public_ipv4, ipv6",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_malformed_profile(tmp_path: Path, text: str, line: int, key: str, message: str) -> None:
    path = write(tmp_path, text)
    issues = issues_of(path)
    assert len(issues) == 1, "\n".join(map(str, issues))
    (issue,) = issues
    prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    assert str(issue).startswith(prefix), str(issue)
    assert message in issue.message, str(issue)
    assert (issue.file, issue.line, issue.key) == (str(path), line, key)


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


def test_all_errors_are_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        name: three
        jumps:
          - name: gw1
            address: 10.0.0.1
            port: 0
        sites:
          - name: rack1
            jumps: [gw2]
        nodes:
          - name: n1
            site: rack1
            adress: 10.0.0.5
        """,
    )
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:6: jumps[0].port: 0 is outside 1..65535",
        f"{path}:9: sites[0].jumps[0]: unknown jump 'gw2' (did you mean 'gw1'?)",
        f"{path}:13: nodes[0].adress: unknown key 'adress' (did you mean 'address'?)",
    ]


def test_errors_in_one_item_do_not_cascade(tmp_path: Path) -> None:
    """A jump with a bad port is still a defined jump: references to it are fine."""
    path = write(
        tmp_path,
        """\
        version: 1
        jumps:
          - {name: gw1, address: 10.0.0.1, port: -1}
          - {name: inner, address: 10.0.0.2, via: gw1}
        sites:
          - {name: s, jumps: [gw1, inner]}
        """,
    )
    issues = issues_of(path)
    assert [(i.line, i.key) for i in issues] == [(3, "jumps[0].port")]


def test_cycle_reported_once_with_tail(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        jumps:
          - {name: a, address: 10.0.0.1, via: b}
          - {name: b, address: 10.0.0.2, via: c}
          - {name: c, address: 10.0.0.3, via: a}
          - {name: d, address: 10.0.0.4, via: a}
        """,
    )
    issues = issues_of(path)
    assert [str(i) for i in issues] == [f"{path}:3: jumps[0].via: jump chain loops: a -> b -> c -> a"]


def test_messages_name_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "version: 1\nname: [x]\n", name="rel.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError) as info:
        load_profile("./rel.yaml")
    assert str(info.value) == "rel.yaml:2: name: expected a name, got a list"


def test_unreadable_encoding(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"version: 1\nname: \xff\xfe\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value) == f"{path}:2: not UTF-8 text"


def test_unsupported_version_reports_only_that(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 3\nfuture_key: 1\njumps: {}\n")
    assert [str(i) for i in issues_of(path)] == [
        f"{path}:1: version: unsupported profile version 3 (this fleet reads version 1)"
    ]


def test_error_is_not_a_traceback_for_garbage(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("\t\x00\x07 {[}: :\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}:")


def test_issue_str_without_line_or_key() -> None:
    assert str(ProfileIssue("f.yaml", 0, "", "cannot read")) == "f.yaml: cannot read"
    assert str(ProfileIssue("f.yaml", 3, "", "bad")) == "f.yaml:3: bad"
    assert str(ProfileIssue("f.yaml", 3, "a.b", "bad")) == "f.yaml:3: a.b: bad"
