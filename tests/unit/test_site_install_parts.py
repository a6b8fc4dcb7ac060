"""The pure parts of `site install`: which venv, remote paths, the unit text, and
what a copy of the source tree keeps (the wheel is built from that copy)."""

from __future__ import annotations

import shlex
import shutil
import textwrap
from pathlib import Path

import pytest

from fleet.profile import parse_profile
from fleet.sites import unit
from fleet.sites.install import DEFAULT_VENV, expand, venv_of
from fleet.sites.wheels import skipper, tree_digest

ROOT = Path(__file__).resolve().parents[2]


def site_with(command: str):
    profile = parse_profile(textwrap.dedent(f"""\
        version: 1
        sites:
          - name: rack2
            agent: {{host: 10.92.0.2, command: {command!r}}}
        """), "p.yaml")
    return profile.site("rack2")


@pytest.mark.parametrize("command, chosen, venv", [
    ("/opt/fleet/bin/fleet --headless agent", None, "/opt/fleet"),
    ("~/v/bin/fleet --headless --profile x agent", None, "~/v"),
    ("fleet --headless agent", None, DEFAULT_VENV),
    ("cd /x && python -m fleet --headless agent", None, DEFAULT_VENV),
    ("/opt/fleet/bin/fleet --headless agent", "~/mine", "~/mine"),
])
def test_the_venv_is_chosen_then_the_agent_commands_then_the_default(command, chosen, venv):
    assert venv_of(site_with(command), chosen) == venv


@pytest.mark.parametrize("path, absolute", [
    ("~", "/home/u"), ("~/.local/v", "/home/u/.local/v"), ("v", "/home/u/v"),
    ("/opt/v", "/opt/v"),
])
def test_remote_paths_are_the_remote_homes(path, absolute):
    assert expand(path, "/home/u") == absolute


def test_the_unit_runs_the_venvs_fleet_on_the_profile_quoted_for_systemd():
    text = unit.unit_text("rack2", "/home/u/my venv", "/home/u/100%.yaml", root=False)
    [line] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    # systemd's own splitting: shell-like quotes, %% for a %
    assert shlex.split(line.removeprefix("ExecStart=").replace("%%", "%")) == [
        "/home/u/my venv/bin/fleet", "--headless", "--profile", "/home/u/100%.yaml", "serve",
        "--site", "rack2"]
    assert "WantedBy=default.target" in text
    assert "WantedBy=multi-user.target" in unit.unit_text("rack2", "/v", "/p", root=True)
    assert unit.unit_path("rack2", "/home/u", root=False) == \
        "/home/u/.config/systemd/user/fleet-site-rack2.service"
    assert unit.unit_path("rack2", "/root", root=True) == \
        "/etc/systemd/system/fleet-site-rack2.service"


def test_the_source_copy_keeps_every_package_and_leaves_the_checkouts_extras(tmp_path):
    """fleet/build is a package; only the checkout's top-level build/ is left out."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=skipper(ROOT))
    packages = {p.parent.relative_to(ROOT) for p in (ROOT / "fleet").rglob("__init__.py")}
    assert Path("fleet/build") in packages
    assert all((copy / p / "__init__.py").is_file() for p in packages)
    assert (copy / "pyproject.toml").is_file() and (copy / "profiles").is_dir()
    assert not any((copy / top).exists() for top in (".git", ".venv", "tests"))
    assert not list(copy.rglob("__pycache__"))


def test_the_digest_follows_the_code(tmp_path):
    tree = tmp_path / "src"
    (tree / "fleet" / "build").mkdir(parents=True)
    (tree / "fleet" / "build" / "api.py").write_text("A = 1\n")
    (tree / "build").mkdir()
    (tree / "build" / "junk").write_text("x")
    before = tree_digest(tree)
    (tree / "build" / "junk").write_text("y")  # the checkout's build dir: not the code
    assert tree_digest(tree) == before
    (tree / "fleet" / "build" / "api.py").write_text("A = 2\n")
    assert tree_digest(tree) != before
