"""The README's commands work as written after the README's install: each one
runs the command the install made (`.venv/bin/fleet`, not a `fleet` that is on
no PATH) and its arguments parse."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.headless.parser import build_parser as headless_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
INSTALLED = Path(sys.executable).with_name("fleet")


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced block, and ("indented", lines) of each
    block indented by four spaces."""
    blocks: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang, body = line[3:].strip(), []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((lang, body))
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            body = []
            while i < len(lines) and lines[i].startswith("    "):
                body.append(lines[i][4:])
                i += 1
            blocks.append(("indented", body))
            continue
        i += 1
    return blocks


def commands(text: str) -> list[list[str]]:
    """What a reader would type: every line of sh and indented blocks, and the
    `$ ` lines of plain blocks (the others are synopses and output), split at
    `&&`, without comments."""
    found = []
    for lang, body in code_blocks(text):
        for line in body:
            if lang == "":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif lang not in ("sh", "indented"):
                continue
            for part in re.split(r"\s&&\s", line):
                argv = shlex.split(part, comments=True)
                if argv:
                    found.append(argv)
    return found


FLEET_COMMANDS = [argv for argv in commands(README)
                  if Path(argv[0]).name == "fleet" or argv[0] == "fleet"]


def test_the_readme_shows_fleet_commands():
    assert len(FLEET_COMMANDS) >= 8, FLEET_COMMANDS


@pytest.mark.parametrize("argv", FLEET_COMMANDS, ids=lambda a: " ".join(a)[:70])
def test_each_command_runs_the_installed_fleet_and_parses(argv):
    install = next(a for a in commands(README) if a[:3] == ["python3", "-m", "venv"])
    venv = install[3]
    assert argv[0] == f"{venv}/bin/fleet", (
        f"`{shlex.join(argv)}`: after the README's install only {venv}/bin/fleet exists")
    assert INSTALLED.is_file()
    if Path(sys.prefix).resolve() == (ROOT / venv).resolve():  # the README's own venv
        assert (ROOT / argv[0]).resolve() == INSTALLED.resolve()
    args = argv[1:]
    if "--" in args:  # exec's remote command
        args = args[:args.index("--")]
    if "--headless" in args:
        args.remove("--headless")
        headless_parser().parse_args(args)  # SystemExit(2) on a usage error
    else:
        from fleet.tui.main import build_parser as console_parser

        console_parser().parse_args(args)


@pytest.mark.parametrize("command", ["machines", "nodes"])
def test_the_read_only_ones_run_from_the_clone(xdg, command):
    argv = next(a for a in FLEET_COMMANDS if a[-1] == command)
    r = subprocess.run([str(INSTALLED), *argv[1:]], cwd=ROOT, capture_output=True,
                       text=True, env=xdg, timeout=60)
    assert r.returncode == 0, r.stderr
    # nothing but the demo's second site said away: it lives while the demo runs,
    # and no demo runs here
    said = r.stderr.splitlines()
    assert all(line.startswith("fleet: site demo-east unreachable via demo-jump since ")
               for line in said), r.stderr
