"""Profiles as a user finds and makes them: a name is looked up in
~/.config/fleet/profiles/ first (a user's edited demo.yaml wins over the
bundled one), `info` names the file in use, and the errors say what happened."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet.headless.parser import build_parser

from fleet.profile import load_profile, resolve_profile
from fleet.profile.locate import bundled_dir, user_dir

INSTALLED = Path(sys.executable).with_name("fleet")


def fleet(*argv, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(INSTALLED), *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_user_copy_of_demo_wins_over_the_bundled_one(xdg):
    mine = user_dir() / "demo.yaml"
    mine.parent.mkdir(parents=True)
    shutil.copytree(bundled_dir() / "templates", mine.parent / "templates")
    text = (bundled_dir() / "demo.yaml").read_text()
    assert "reply_delay_ms: 0 " in text
    mine.write_text(text.replace("reply_delay_ms: 0 ", "reply_delay_ms: 100 "))

    assert resolve_profile("demo") == mine
    profile = load_profile("demo")
    assert profile.site("demo").distributor.reply_delay_ms == 100
    r = fleet("--headless", "--format", "json", "info", env=xdg)  # the default profile
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["profile_file"] == str(mine)
    r = fleet("--headless", "info", env=xdg)
    assert f"profile_file       {mine}" in r.stdout


def test_without_a_user_copy_the_bundled_demo_is_used(xdg):
    r = fleet("--headless", "--format", "json", "info", env=xdg)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["profile_file"] == str(bundled_dir() / "demo.yaml")
    assert yaml.safe_load((bundled_dir() / "demo.yaml").read_text())["name"] == "demo"


def test_profile_new_writes_a_starter_that_checks_as_the_lab_example_says(xdg):
    """The steps in profiles/lab.example.yaml's header, as written there."""
    header = (bundled_dir() / "lab.example.yaml").read_text().split("\nversion:")[0]
    assert "fleet --headless profile new lab" in header
    assert "fleet --headless profile check lab" in header

    r = fleet("--headless", "profile", "new", "lab", env=xdg)
    assert r.returncode == 0, r.stderr
    mine = user_dir() / "lab.yaml"
    assert str(mine) in r.stdout and r.stderr == ""
    text = mine.read_text()
    assert "\nname: lab " in text and "# An example profile" in text  # comments kept
    for template in ("debian12.preseed", "rocky9.ks", "menu.ipxe", "rescue.ipxe"):
        assert (user_dir() / "templates" / template).is_file(), template
    r = fleet("--headless", "profile", "check", "lab", env=xdg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{mine}: ok: profile 'lab'")  # which file it checked
    r = fleet("--headless", "profile", "check", str(mine), env=xdg)
    assert r.returncode == 0, r.stderr

    # its store goes to the data dir, not into ~/.config
    r = fleet("--headless", "--profile", "lab", "--format", "json", "info", env=xdg)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["profile_file"] == str(mine)
    assert info["store"] == str(Path(info["data_dir"]) / "lab.db")

    # never over an existing profile (the user's edits survive)
    mine.write_text(text + "# my edit\n")
    r = fleet("--headless", "profile", "new", "lab", env=xdg)
    assert r.returncode == 2
    assert r.stderr.startswith("fleet: ") and r.stderr.count("\n") == 1, r.stderr
    assert "exists" in r.stderr
    assert mine.read_text().endswith("# my edit\n")


def test_profile_new_from_demo_makes_the_demo_editable(xdg):
    (user_dir() / "templates").mkdir(parents=True)
    edited = user_dir() / "templates" / "debian12.preseed"
    edited.write_text("# my preseed\n")
    r = fleet("--headless", "--format", "json", "profile", "new", "demo", "--from", "demo",
              env=xdg)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["file"] == str(user_dir() / "demo.yaml")
    assert str(edited) in record["kept"] and edited.read_text() == "# my preseed\n"
    assert str(user_dir() / "templates" / "rocky9.ks") in record["templates"]
    # the copy is the one in use from now on
    r = fleet("--headless", "--format", "json", "info", env=xdg)
    assert json.loads(r.stdout)["profile_file"] == str(user_dir() / "demo.yaml")
    assert load_profile("demo").demo is not None


def test_profile_new_refuses_bad_names(xdg):
    r = fleet("--headless", "profile", "new", "../x", env=xdg)
    assert r.returncode == 2 and r.stderr.startswith("fleet: ") and "profile name" in r.stderr
    r = fleet("--headless", "profile", "new", "x", "--from", "nosuch", env=xdg)
    assert r.returncode == 2
    assert not user_dir().exists()


# Root reads any file: drop the capabilities that let it, for the child only.
AS_OWNER_ONLY = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])


def test_an_unreadable_profile_is_an_environment_problem_exit_3(xdg, tmp_path):
    path = tmp_path / "locked.yaml"
    path.write_text("version: 1\nname: locked\n")
    path.chmod(0)
    console = subprocess.run([*AS_OWNER_ONLY, str(INSTALLED), "--profile", str(path)],
                             capture_output=True, text=True, env=xdg, timeout=60)
    assert console.returncode == 3, console.stderr
    assert console.stderr == f"fleet: cannot read profile {path}: Permission denied\n"
    r = subprocess.run([*AS_OWNER_ONLY, str(INSTALLED), "--headless", "--profile", str(path),
                        "machines"], capture_output=True, text=True, env=xdg, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr == f"fleet: cannot read profile {path}: Permission denied\n"
    r = subprocess.run([*AS_OWNER_ONLY, str(INSTALLED), "--headless", "profile", "check",
                        str(path)], capture_output=True, text=True, env=xdg, timeout=60)
    assert r.returncode == 3, r.stderr


@pytest.mark.parametrize("face", [["--headless"], []])
def test_a_missing_profile_is_one_fleet_line(xdg, face):
    r = fleet(*face, "--profile", "nosuch", *(["machines"] if face else []), env=xdg)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: no such profile 'nosuch' ("), lines
    assert str(user_dir() / "nosuch.yaml") in lines[0]
    assert "profile new nosuch" in lines[0]


def _helps(parser: argparse.ArgumentParser, prefix: str = ""):
    yield prefix or "fleet --headless", parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _helps(sub, f"{prefix} {name}".strip())


def test_every_command_named_in_the_help_is_runnable_as_written():
    """Help that says `fleet jobs` sends the reader into a usage error: the
    scripting commands need --headless."""
    seen = 0
    for where, text in _helps(build_parser()):
        for quoted in re.findall(r"`(fleet\b[^`]*)`", " ".join(text.split())):
            seen += 1
            argv = shlex.split(quoted)[1:]
            if argv and argv[0] == "--profile":  # the console: its options only
                assert argv[2:] in ([], ["--read-only"]), f"{where} --help: `{quoted}`"
                continue
            assert argv and argv[0] == "--headless", f"{where} --help: `{quoted}`"
            # the subcommand parses (placeholders like ID stand for a value)
            assert argv[1] in build_parser()._subparsers._group_actions[0].choices, quoted
    assert seen >= 3
