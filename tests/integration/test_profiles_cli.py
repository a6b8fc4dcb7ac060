"""Profiles as a user finds and makes them: a name is looked up in
~/.config/fleet/profiles/ first (a user's edited demo.yaml wins over the
bundled one), `info` names the file in use, and the errors say what happened."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

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
