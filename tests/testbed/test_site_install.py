"""`fleet --headless site install SITE` against a real sshd in a namespace, an
unprivileged user's home being the site host's disk (root testbed).

The wheels are built once per session (fleet.sites.wheels, into the cache the
console subprocesses use), so each install copies and installs, not builds.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.sites import wheels
from support import site_host
from support.netns import Topology
from support.profiles import write_profile

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
USER = "fleetsite"
OLD = "0.0.9"  # another fleet version, built from this source with its number changed


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory) -> Path:
    """XDG_CACHE_HOME whose fleet/ holds the running fleet's wheels (built once)."""
    cache = tmp_path_factory.mktemp("cache")
    wheels.cached_or_built(cache / "fleet", say=lambda _: None)
    return cache


@pytest.fixture(scope="session")
def old_wheel(tmp_path_factory) -> Path:
    """fleet-OLD's wheel (no dependencies: they are fleet's own)."""
    folder = tmp_path_factory.mktemp("old")
    src = folder / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=wheels.skipper(ROOT))
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', f'version = "{OLD}"'))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(folder), str(src)], check=True, timeout=600)
    [wheel] = folder.glob(f"fleet-{OLD}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def host(testbed_guard):
    topo = Topology("sitehost", protect=(site_host.SUBNET,))
    try:
        yield site_host.start(topo, testbed_guard.keys, USER)
    finally:
        topo.close()
        site_host.remove_user(USER)


def console_profile(tmp_path: Path, host: site_host.SiteHost, *, command: str | None = None,
                    port: int = 22) -> Path:
    venv = f"{host.home}/.local/share/fleet/venv"
    profile = f"{host.home}/.config/fleet/profiles/console.yaml"
    return write_profile(tmp_path, name="console", overrides={
        "operator": {"ssh": {"identity": str(host.client_key),
                             "known_hosts": [str(host.known_hosts)], "connect_timeout": 5}},
        "jumps": [{"name": "gw", "address": host.address}],
        "sites": [{"name": "rack2", "agent": {
            "host": host.address, "via": "gw", "user": host.user, "port": port,
            "command": command or f"{venv}/bin/fleet --headless --profile {profile} agent"}}],
    })


def fleet(profile: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=env, capture_output=True, text=True,
                          timeout=600)


def status(profile: Path, env: dict) -> dict:
    seen = fleet(profile, env, "site", "status", "--format", "json")
    return {r["site"]: r for r in json.loads(seen.stdout)}["rack2"] | {"_rc": seen.returncode}


@pytest.fixture
def env(xdg, wheel_cache):
    return dict(xdg, XDG_CACHE_HOME=str(wheel_cache))


async def test_install_then_status_then_again_then_an_other_version_upgraded(
        tmp_path, env, host, old_wheel):
    version = wheels.running_version()
    profile = console_profile(tmp_path, host)
    venv = host.home / ".local/share/fleet/venv"
    remote_profile = host.home / ".config/fleet/profiles/console.yaml"
    assert status(profile, env)["connected"] is False  # nothing there yet

    began = time.monotonic()
    first = fleet(profile, env, "site", "install", "rack2", "--format", "json")
    took_first = time.monotonic() - began
    assert first.returncode == 0, first.stderr
    row = json.loads(first.stdout)
    assert row["action"] == "installed" and row["version"] == version
    assert row["previous"] is None and row["venv"] == str(venv)
    assert row["where"] == f"{USER}@{host.address} via gw"
    assert row["profile"] == str(remote_profile) and row["unit_state"] == "written"
    assert "building wheels" not in first.stderr  # the session's cache was used
    assert f"rack2: installed fleet {version} in {venv}" in first.stderr
    assert f"rack2: profile {profile} copied to " in first.stderr
    # no systemd on this host: one line, and how to start it
    serve = f"{venv}/bin/fleet --headless --profile {remote_profile} serve --site rack2"
    said = [ln for ln in first.stderr.splitlines() if "systemd" in ln]
    assert said == [f"rack2: systemd does not run on {USER}@{host.address} via gw: unit "
                    f"{row['unit']} written, not started; start the site with: {serve}"], said
    assert "Traceback" not in first.stderr
    # installed as the user, in the user's home, from the copied wheels only
    assert host.as_user(f"{venv}/bin/python", "-c", "import importlib.metadata as m; "
                        "print(m.version('fleet'))").stdout.strip() == version
    assert venv.owner() == USER
    assert remote_profile.read_text() == profile.read_text()
    assert remote_profile.stat().st_mode & 0o777 == 0o600
    assert not (host.home / ".cache/fleet/site-install" / version).exists()  # staging removed
    unit = host.home / ".config/systemd/user/fleet-site-rack2.service"
    assert row["unit"] == str(unit)
    text = unit.read_text()
    assert f"\nExecStart={serve}\n" in text and "WantedBy=default.target" in text
    assert "Restart=on-failure" in text
    # what the unit would run does run there, as the user: rack2's serve
    serving = subprocess.Popen(
        ["/usr/sbin/runuser", "-u", USER, "--", *shlex.split(serve)], cwd=host.home,
        env={"HOME": str(host.home), "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert serving.poll() is None, serving.communicate()
    serving.terminate()  # runuser passes it on
    _, err = serving.communicate(timeout=20)
    assert "fleet.site: started boot" in err and "fleet.site: stopped boot" in err, err

    seen = status(profile, env)
    assert seen["connected"] is True and seen["_rc"] == 0, seen["reason"]
    assert seen["version"] == version and seen["skew"] is None

    began = time.monotonic()
    again = fleet(profile, env, "site", "install", "rack2")
    took_again = time.monotonic() - began
    assert again.returncode == 0, again.stderr
    assert f"rack2: already fleet {version} in {venv}" in again.stderr
    assert again.stdout.startswith(f"rack2: already fleet {version} in {venv} on "), again.stdout
    assert took_again < 5, took_again
    assert f"rack2: profile {profile} unchanged at " in again.stderr  # nor rewritten

    # another version at the site (put there by hand): status reads the skew
    # plainly, and install upgrades it
    shutil.copy(old_wheel, host.home / old_wheel.name)
    shutil.chown(host.home / old_wheel.name, USER)
    put = host.as_user(f"{venv}/bin/python", "-m", "pip", "install", "--quiet", "--no-deps",
                       "--no-index", str(host.home / old_wheel.name))
    assert put.returncode == 0, put.stderr
    skewed = status(profile, env)
    assert skewed["connected"] is True and skewed["version"] == OLD
    assert skewed["skew"] == (f"agent runs fleet {OLD}, this console {version} (same site "
                              f"protocol 1: it works; `fleet --headless site install rack2` "
                              f"puts fleet {version} there)"), skewed["skew"]
    table = fleet(profile, env, "site", "status")
    assert f"rack2: agent runs fleet {OLD}, this console {version}" in table.stdout
    upgraded = fleet(profile, env, "site", "install", "rack2", "--format", "json")
    assert upgraded.returncode == 0, upgraded.stderr
    row = json.loads(upgraded.stdout)
    assert row["action"] == "upgraded" and row["previous"] == OLD and row["version"] == version
    assert f"rack2: upgraded fleet {OLD} to {version} in {venv}" in upgraded.stderr
    seen = status(profile, env)
    assert seen["connected"] is True and seen["version"] == version and seen["skew"] is None
    print(f"\nsite install: first {took_first:.1f}s, again {took_again:.2f}s")


async def test_prepared_wheels_no_unit_and_a_given_venv_and_profile_path(
        tmp_path, env, host, wheel_cache):
    """--wheels installs those; --no-unit writes none; --venv and --profile-path
    are used as given (paths relative to the home), and an agent command that
    misses them is named."""
    given = host.home / "site.yaml"
    given.write_text("not read by install\n")
    shutil.chown(given, USER)
    unit = host.home / ".config/systemd/user/fleet-site-rack2.service"
    [prepared] = (wheel_cache / "fleet").glob("wheels-*")
    profile = console_profile(tmp_path, host)
    done = fleet(profile, env, "site", "install", "rack2", "--venv", "other-venv",
                 "--wheels", str(prepared), "--profile-path", "site.yaml", "--no-unit",
                 "--format", "json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    venv = f"{host.home}/other-venv"
    assert row["action"] == "installed" and row["venv"] == venv
    assert row["profile"] == str(given)
    assert row["unit"] is None and row["unit_state"] == "skipped"
    assert f"rack2: copying {len(list(prepared.glob('*.whl')))} wheels" in done.stderr
    assert Path(venv, "bin/fleet").exists()
    assert not unit.exists() or "site.yaml" not in unit.read_text()
    assert ("rack2: the profile's agent command" in done.stderr
            and f"set agent.command: {venv}/bin/fleet --headless --profile {given} agent"
            in done.stderr), done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = fleet(profile, env, "site", "install", "rack2", "--wheels", str(empty))
    assert (none.returncode, none.stdout) == (2, "")
    assert none.stderr == (f"fleet: --wheels {empty}: no fleet-{wheels.running_version()}-*.whl "
                           f"there (this console runs fleet {wheels.running_version()})\n")
    missing = fleet(profile, env, "site", "install", "rack2", "--venv", "~/elsewhere",
                    "--profile-path", "nowhere.yaml")
    assert missing.returncode == 2
    assert missing.stderr == f"fleet: --profile-path {host.home}/nowhere.yaml: no such file " \
                             f"on {USER}@{host.address} via gw\n"
    assert not (host.home / "elsewhere").exists()  # refused before anything was changed


@pytest.mark.parametrize("environment, says", [
    ("PATH=/nonexistent\n", "fleet: site rack2: no python3 on {where}\n"),
    ("PYTHONPATH={home}/hide\n",
     "fleet: site rack2: `python3 -m venv` does not work on {where} "
     "(Debian: apt install python3-venv)\n"),
])
async def test_a_host_without_python3_or_venv_is_exit_3_in_one_line(tmp_path, env, host,
                                                                    environment, says):
    """The user's sessions get another environment (sshd's PermitUserEnvironment):
    no python3 on PATH; or an ensurepip that does not import, as on a Debian
    without python3-venv."""
    ssh = host.home / ".ssh"
    hide = host.home / "hide" / "ensurepip"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('ensurepip is not available')\n")
    ssh.mkdir(exist_ok=True)
    (ssh / "environment").write_text(environment.format(home=host.home))
    try:
        profile = console_profile(tmp_path, host)
        done = fleet(profile, env, "site", "install", "rack2")
    finally:
        (ssh / "environment").unlink()
        shutil.rmtree(host.home / "hide")
    assert done.returncode == 3, done.stderr
    assert done.stderr == says.format(where=f"{USER}@{host.address} via gw"), done.stderr
    assert done.stdout == ""


async def test_an_unreachable_agent_host_is_exit_3_in_one_line(tmp_path, env, host):
    profile = console_profile(tmp_path, host, port=2222)  # nothing listens there
    done = fleet(profile, env, "site", "install", "rack2")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith(f"fleet: site rack2: cannot reach {USER}@{host.address}:2222 "
                                  f"via gw: "), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("site, says", [
    ("rack1", "fleet: site rack1 runs on this host; nothing to install\n"),
    ("rack9", "fleet: unknown site 'rack9' (sites: rack1, rack2)\n"),
])
async def test_a_local_or_unknown_site_is_bad_input(tmp_path, env, host, site, says):
    done = fleet(console_profile(tmp_path, host), env, "site", "install", site)
    assert (done.returncode, done.stderr, done.stdout) == (2, says, "")
