"""A site's `agent:` block: where its boot services run, checked at load time
with FILE:LINE errors like every other key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.core.config import AGENT_COMMAND, AgentConfig
from fleet.profile import ProfileError, load_profile

HEAD = """\
version: 1
jumps:
  - {name: gw3, address: 203.0.113.7}
sites:
  - name: rack1
  - name: rack2
    jumps: [gw3]
    agent:
"""


def write(tmp_path: Path, agent: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(agent), "      "))
    return path


def test_a_site_without_agent_runs_here_and_an_agent_block_is_read(tmp_path):
    profile = load_profile(write(tmp_path, """\
        host: 10.92.0.2
        via: gw3
        user: fleet
        port: 2222
        command: /opt/fleet/bin/fleet --headless agent
        """))
    assert profile.site("rack1").agent is None
    assert profile.site("rack2").agent == AgentConfig(
        host="10.92.0.2", via="gw3", user="fleet", port=2222,
        command="/opt/fleet/bin/fleet --headless agent")


def test_agent_defaults(tmp_path):
    agent = load_profile(write(tmp_path, "host: site2.example.net\n")).site("rack2").agent
    assert agent == AgentConfig(host="site2.example.net")
    assert (agent.via, agent.user, agent.port, agent.command) == (None, None, 22, AGENT_COMMAND)


@pytest.mark.parametrize("agent, line, key, message", [
    ("host: 10.92.0.2\nvia: gw4\n", 10, "sites[1].agent.via",
     "unknown jump 'gw4' (did you mean 'gw3'?)"),
    ("host: 10.92.0.999\n", 9, "sites[1].agent.host", "not an IPv4 address"),
    ("via: gw3\n", 8, "sites[1].agent.host", "missing required key 'host'"),
    ("host: 10.92.0.2\nport: 70000\n", 10, "sites[1].agent.port", "70000 is outside 1..65535"),
    ("host: 10.92.0.2\nuser: 'a b'\n", 10, "sites[1].agent.user", "not a user name"),
    ("host: 10.92.0.2\ncommand: ''\n", 10, "sites[1].agent.command",
     "expected a command line, got an empty string"),
    ("host: 10.92.0.2\nhots: x\n", 10, "sites[1].agent.hots",
     "unknown key 'hots' (did you mean 'host'?)"),
])
def test_a_bad_agent_block_is_one_file_line_error(tmp_path, agent, line, key, message):
    path = write(tmp_path, agent)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    issues = info.value.issues
    assert len(issues) == 1, issues
    assert (issues[0].line, issues[0].key) == (line, key)
    assert message in issues[0].message
    assert str(info.value).startswith(f"{path}:{line}: {key}: ")


def test_an_agent_block_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD.replace("    agent:\n", "    agent: 10.92.0.2\n"))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert [(i.line, i.key) for i in info.value.issues] == [(8, "sites[1].agent")]
    assert "expected a mapping (host, via, user, port, command)" in info.value.issues[0].message


def test_the_two_site_example_loads():
    from fleet.profile import load_profile as load

    root = Path(__file__).resolve().parents[2]
    profile = load(root / "profiles" / "two-sites.example.yaml")
    assert [(s.name, s.agent) for s in profile.sites] == [
        ("rack1", None),
        ("rack2", AgentConfig(
            host="10.92.0.2", via="gw3", user="fleet", port=22,
            command="~/.local/share/fleet/venv/bin/fleet --headless --profile "
                    "~/.config/fleet/profiles/two-sites.yaml agent"))]
