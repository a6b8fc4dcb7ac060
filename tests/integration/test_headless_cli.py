"""The headless contract: output formats, exit codes, --help, profile errors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.headless.parser import build_parser

REPO = Path(__file__).resolve().parents[2]
MAC = "00:14:22:01:02:03"


def fleet(*argv, env, timeout=60, check=None):
    result = subprocess.run([sys.executable, "-m", "fleet", *argv], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture
def seeded(profile_path, xdg):
    """A profile whose store knows one discovered machine."""
    code = ("import asyncio\nfrom fleet.engine import Engine\n"
            "async def m():\n"
            f"    e = await Engine.open({str(profile_path)!r})\n"
            f"    e.record_sighting({MAC!r}, stage='firmware')\n"
            "    await e.close()\n"
            "asyncio.run(m())\n")
    subprocess.run([sys.executable, "-c", code], env=xdg, check=True, timeout=60)
    return profile_path


def test_demo_profile_machines_as_json_array(xdg):
    r = fleet("--headless", "--profile", str(REPO / "profiles/demo.yaml"), "--format", "json",
              "machines", env=xdg, check=0)
    assert isinstance(json.loads(r.stdout), list)


def test_machines_formats(seeded, xdg):
    r = fleet("--headless", "--profile", str(seeded), "machines", "--format", "json",
              env=xdg, check=0)
    [record] = json.loads(r.stdout)
    assert record["mac"] == MAC and record["vendor"] == "Dell Inc."
    assert record["state"] == "discovered" and record["first_seen"].endswith("Z")
    assert not any(k.startswith("_") for k in record)
    r = fleet("--headless", "--profile", str(seeded), "--format", "jsonl", "machines",
              env=xdg, check=0)
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["mac"] == MAC
    r = fleet("--headless", "--profile", str(seeded), "machines", env=xdg, check=0)
    header, row = r.stdout.splitlines()
    assert header.split()[:3] == ["MAC", "ADDRESS", "HARDWARE"]
    assert row.startswith(MAC) and "Dell Inc." in row and "ago" in row


def test_lease_and_release_through_the_cli(seeded, xdg):
    r = fleet("--headless", "--profile", str(seeded), "--format", "json", "lease", MAC,
              "--deployment", "debian12", "--hostname", "web5", "--address", "10.91.0.5",
              env=xdg, check=0)
    record = json.loads(r.stdout)
    assert record["state"] == "leased" and record["hostname"] == "web5"
    r = fleet("--headless", "--profile", str(seeded), "release", MAC, "--wipe", env=xdg, check=0)
    assert "wipes it" in r.stdout
    r = fleet("--headless", "--profile", str(seeded), "--format", "json", "machines",
              "--state", "wiping", env=xdg, check=0)
    assert [m["mac"] for m in json.loads(r.stdout)] == [MAC]


@pytest.mark.parametrize("argv,message", [
    (["lease", "52:54:00:00:00:09", "-d", "debian12"], "unknown MAC 52:54:00:00:00:09"),
    (["lease", "not-a-mac", "-d", "debian12"], "not a MAC address"),
    (["lease", MAC, "-d", "nope"], "unknown deployment 'nope'"),
    (["lease", MAC, "-d", "debian12", "--hostname", "a;reboot"], "not a valid hostname"),
    (["machines", "--state", "sleeping"], "unknown state 'sleeping'"),
    (["nodes", "--select", "role"], "bad selection term"),
    (["distributor", "on", "rack9"], "unknown distributor 'rack9'"),
    (["--read-only", "lease", MAC, "-d", "debian12"], "--read-only"),
])
def test_bad_input_exits_2_with_a_message(seeded, xdg, argv, message):
    r = fleet("--headless", "--profile", str(seeded), *argv, env=xdg, check=2)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_usage_errors_exit_2(xdg):
    r = fleet("--headless", "lease", env=xdg, check=2)
    assert "usage:" in r.stderr
    r = fleet("--headless", "frobnicate", env=xdg, check=2)
    assert "invalid choice" in r.stderr


def test_invalid_profile_exits_2_with_file_and_line(tmp_path, xdg):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\njumps:\n  - name: gw1\n    adress: 10.0.0.1\n")
    for argv in (["profile", "check", str(bad)], ["--profile", str(bad), "machines"]):
        r = fleet("--headless", *argv, env=xdg, check=2)
        assert f"{bad}:5: jumps[0].adress: unknown key 'adress'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    r = fleet("--profile", str(bad), env=xdg, check=2)  # the console says the same
    assert f"{bad}:5:" in r.stderr and "Traceback" not in r.stderr


def test_profile_check_ok(xdg):
    r = fleet("--headless", "profile", "check", str(REPO / "profiles/lab.example.yaml"),
              env=xdg, check=0)
    assert "ok" in r.stdout


def test_every_command_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"serve", "info", "profile", "machines", "lease", "release",
                                "nodes", "routes", "exec", "shell", "forward", "build",
                                "artifacts", "jobs", "events", "distributors", "distributor"}
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit_:
            main(["--headless", name, "--help"])
        assert exit_.value.code == 0
        assert "usage: fleet --headless" in capsys.readouterr().out



def test_info_lists_every_path(seeded, xdg, tmp_path):
    r = fleet("--headless", "--profile", str(seeded), "--format", "json", "info", env=xdg,
              check=0)
    info = json.loads(r.stdout)
    assert info["store"] == str(tmp_path / "t.db")
    for key in ("config_dir", "data_dir", "state_dir", "cache_dir", "keys_dir", "logs_dir",
                "recordings_dir", "artifacts_dir", "profile_file"):
        assert info[key].startswith(str(tmp_path)) or key == "profile_file", key


@pytest.mark.parametrize("fmt", [[], ["--format", "table"], ["--format", "jsonl"]])
def test_events_follow_streams_json_lines_from_another_process_and_sigint_is_130(
        seeded, xdg, fmt):
    """As the README says: `events --follow` always streams JSON lines; a signal
    ends it with 130, as it ends `jobs --follow`."""
    proc = subprocess.Popen([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(seeded), *fmt, "events", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=xdg)
    try:
        first = json.loads(proc.stdout.readline())  # the past: machine.discovered
        assert first["kind"] == "machine.discovered"
        fleet("--headless", "--profile", str(seeded), "lease", MAC, "-d", "debian12",
              env=xdg, check=0)
        t0 = time.monotonic()
        second = json.loads(proc.stdout.readline())
        assert second["kind"] == "machine.leased" and second["subject"] == MAC
        assert time.monotonic() - t0 < 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert proc.stderr.read() == ""
    finally:
        proc.kill()


def test_jobs_follow_ends_with_130_on_sigint_too(seeded, xdg):
    proc = subprocess.Popen([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(seeded), "jobs", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=xdg)
    try:
        fleet("--headless", "--profile", str(seeded), "build", "--no-wait", "iso",
              "--chain-url", "http://10.77.0.1:8067/boot/${mac}.ipxe", env=xdg)
        assert proc.stdout.readline().startswith("job ")  # it is following
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert proc.stderr.read() == ""
    finally:
        proc.kill()


def test_exit_codes_hold_with_stderr_closed_and_stdout_cut_short(profile_path, xdg):
    """The installed command exits without interpreter teardown (fleet.cli.run):
    its exit code must still be the command's when a standard stream was closed
    at start (`2>&-`) or the reader went away (`| head -1`)."""
    argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile_path),
            "info"]
    closed = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=xdg, timeout=60,
                            preexec_fn=lambda: os.close(2))
    assert closed.returncode == 0 and "profile" in closed.stdout
    bad = subprocess.run([*argv[:-1], "no-such-command"], stdout=subprocess.PIPE,
                         env=xdg, timeout=60, preexec_fn=lambda: os.close(2))
    assert bad.returncode == 2
    head = subprocess.run(["/bin/sh", "-c", shlex.join(argv)
                           + " | head -c 10 >/dev/null"],
                          capture_output=True, text=True, env=xdg, timeout=60)
    assert head.returncode == 0 and "Traceback" not in head.stderr, head.stderr

