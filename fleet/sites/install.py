"""`site install`: the console's fleet version on a remote site's agent host.

Over the pool's connection to the agent host (the route agent_channel uses:
jumps, strict host keys, the operator's key), in one SSH connection:

1. probe: home, uid, python3 and whether `python3 -m venv` works, systemd, and
   the fleet version already in the venv (same version: nothing is reinstalled);
2. wheels (fleet.sites.wheels, made on this side) over SFTP into a staging
   folder, then `python3 -m venv VENV` and `VENV/bin/python -m pip install
   --no-index --find-links STAGING fleet==VERSION` there: the host needs no index;
3. the profile: this console's profile file is copied to
   ~/.config/fleet/profiles/NAME.yaml on the host (one profile describes every
   site), unless the operator names a file already there (`profile_path`);
4. a systemd unit running `VENV/bin/fleet --headless --profile P serve --site
   SITE` (the profile names every site; the host serves its own), enabled and
   (re)started when systemd runs there.

The venv: `venv` if given, else the folder of the agent command when it names a
venv's bin/fleet, else ~/.local/share/fleet/venv.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable

import asyncssh

from fleet.access.pool import AccessError
from fleet.errors import BadInput, EnvironmentProblem
from fleet.sites import unit as units
from fleet.sites.protocol import one_line
from fleet.sites.remote import SiteUnreachable, agent_node, agent_route, where
from fleet.sites.wheels import Wheels, cached_or_built, prepared, running_version

if TYPE_CHECKING:
    from fleet.core.config import SiteConfig
    from fleet.engine import Engine

DEFAULT_VENV = "~/.local/share/fleet/venv"
STAGING = "~/.cache/fleet/site-install"

PROBE = """\
printf 'home=%s\\n' "$HOME"
printf 'uid=%s\\n' "$(id -u)"
if command -v python3 >/dev/null 2>&1; then
  printf 'python=%s\\n' "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then echo venv=yes; fi
fi
if [ -d /run/systemd/system ]; then echo systemd=yes; fi
"""
# prints the version of fleet in the venv, nothing when there is none
INSTALLED = ("[ -x {python} ] && {python} -c 'from importlib.metadata import version; "
             "print(version(\"fleet\"))' 2>/dev/null || true")

Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    venv: str | None = None
    wheels: Path | None = None
    unit: bool = True
    profile_path: str | None = None


def remote_site(engine: "Engine", name: str) -> "SiteConfig":
    """The site to install, or bad input: unknown, or served by this host."""
    sites = {s.name: s for s in engine.profile.sites}
    site = sites.get(name)
    if site is None:
        raise BadInput(f"unknown site {name!r} (sites: {', '.join(sites) or 'none'})")
    if site.agent is None:
        raise BadInput(f"site {name} runs on this host; nothing to install")
    return site


def venv_of(site: "SiteConfig", chosen: str | None) -> str:
    """The venv before ~ is expanded: chosen, the agent command's, or the default."""
    if chosen:
        return chosen
    assert site.agent is not None
    words = shlex.split(site.agent.command)
    if words and words[0].endswith("/bin/fleet"):
        return str(PurePosixPath(words[0]).parent.parent)
    return DEFAULT_VENV


def expand(path: str, home: str) -> str:
    """A remote path made absolute: `~` and relative paths are the remote home's."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return path if path.startswith("/") else f"{home}/{path}"


async def install(engine: "Engine", name: str, options: Options, say: Say) -> dict[str, Any]:
    site = remote_site(engine, name)
    version = running_version()
    wheels = prepared(options.wheels) if options.wheels else None
    route = agent_route(site, engine.profile, engine.access.operator6)
    host = where(site, engine.profile, route)
    if not route.reachable:
        raise SiteUnreachable(f"site {name}: no route to agent host {site.agent.host}: "
                              f"{route.reason}")
    pool = await engine.access.get_pool()
    try:
        async with pool.session(agent_node(site), route) as link:
            return await _install(engine, site, link.conn, host, version, wheels, options,
                                  say)
    except AccessError as err:
        raise SiteUnreachable(f"site {name}: cannot reach {host}: {one_line(err)}") from None
    except (asyncssh.Error, OSError) as err:
        raise SiteUnreachable(f"site {name}: lost {host}: {one_line(err)}") from None


async def _install(engine: "Engine", site: "SiteConfig", conn, host: str, version: str,
                   wheels: Wheels | None, options: Options, say: Say) -> dict[str, Any]:
    name = site.name
    facts = await _probe(conn)
    home = facts.get("home") or "/"
    if not facts.get("python"):
        raise EnvironmentProblem(f"site {name}: no python3 on {host}")
    if not facts.get("venv"):
        raise EnvironmentProblem(f"site {name}: `python3 -m venv` does not work on {host} "
                                 f"(Debian: apt install python3-venv)")
    venv = expand(venv_of(site, options.venv), home)
    before = (await _run(conn, INSTALLED.format(python=shlex.quote(f"{venv}/bin/python")),
                         f"site {name}: reading the installed version")).strip() or None
    # a given profile path is checked before anything is changed
    profile, profile_changed = await _profile(engine, conn, name, host, home,
                                              options.profile_path, say)
    record: dict[str, Any] = {"site": name, "where": host, "version": version,
                              "previous": before, "venv": venv, "profile": profile}
    if before == version:
        say(f"{name}: already fleet {version} in {venv} on {host}")
        record["action"] = "already"
    else:
        mine = "%d.%d" % sys.version_info[:2]
        if wheels is None and facts["python"] != mine:
            raise EnvironmentProblem(
                f"site {name}: {host} has python3 {facts['python']}, the wheels built here "
                f"are for {mine}: pass --wheels DIR made for {facts['python']}")
        wheels = wheels or cached_or_built(engine.paths.cache_dir,
                                           say=lambda text: say(f"{name}: {text}"))
        await _put_and_pip(conn, name, host, home, venv, version, wheels, say)
        record["action"] = "upgraded" if before else "installed"
        say(f"{name}: {'upgraded fleet ' + before + ' to' if before else 'installed fleet'} "
            f"{version} in {venv} on {host}")
    record["agent_command"] = f"{shlex.quote(venv + '/bin/fleet')} --headless --profile " \
                              f"{shlex.quote(profile)} agent"
    _check_agent_command(site, venv, profile, home, record["agent_command"], say)
    record.update(await _unit(conn, name, host, home, venv, profile, facts, options,
                              restart=record["action"] != "already" or profile_changed,
                              say=say))
    return record


def _check_agent_command(site: "SiteConfig", venv: str, profile: str, home: str,
                         wanted: str, say: Say) -> None:
    """The console runs the profile's agent command: say when it misses this install
    (another fleet, or another profile)."""
    assert site.agent is not None
    words = shlex.split(site.agent.command)
    given = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--profile", "-p")),
                 None)
    if (not words or expand(words[0], home) != f"{venv}/bin/fleet" or given is None
            or expand(given, home) != profile):
        say(f"{site.name}: the profile's agent command ({site.agent.command}) does not run "
            f"this install; set agent.command: {wanted}")


async def _probe(conn) -> dict[str, str]:
    out = await _run(conn, PROBE, "probing the host")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def _run(conn, command: str, doing: str) -> str:
    """stdout of a remote shell command; EnvironmentProblem with its last words
    when it fails."""
    done = await conn.run(command, check=False)
    if done.exit_status != 0:
        words = [ln for ln in str(done.stderr or done.stdout or "").splitlines() if ln.strip()]
        last = words[-1].strip() if words else f"exit {done.exit_status}"
        raise EnvironmentProblem(f"{doing} failed: {one_line(last, 300)}")
    return str(done.stdout or "")


async def _put_and_pip(conn, name: str, host: str, home: str, venv: str, version: str,
                       wheels: Wheels, say: Say) -> None:
    staging = expand(STAGING, home) + f"/{version}"
    say(f"{name}: copying {len(wheels.files)} wheels ({wheels.size / 1e6:.1f} MB) to "
        f"{host}:{staging}")
    q = shlex.quote
    await _run(conn, f"rm -rf {q(staging)} && mkdir -p {q(staging)}",
               f"site {name}: making {staging}")
    async with conn.start_sftp_client() as sftp:
        await sftp.put([str(f) for f in wheels.files], staging)
    say(f"{name}: installing into {venv}")
    await _run(conn, f"mkdir -p {q(str(PurePosixPath(venv).parent))} && "
                     f"{{ [ -x {q(venv + '/bin/python')} ] || python3 -m venv {q(venv)}; }}",
               f"site {name}: python3 -m venv {venv} on {host}")
    await _run(conn, f"PIP_DISABLE_PIP_VERSION_CHECK=1 {q(venv + '/bin/python')} -m pip "
                     f"install --quiet --no-index --find-links {q(staging)} "
                     f"{q('fleet==' + version)} && rm -rf {q(staging)}",
               f"site {name}: pip install fleet=={version} on {host}")


async def _profile(engine: "Engine", conn, name: str, host: str, home: str,
                   given: str | None, say: Say) -> tuple[str, bool]:
    """The profile path the site's serve and agent use on the host, and whether
    the copy there changed."""
    if given:
        path = expand(given, home)
        done = await conn.run(f"test -f {shlex.quote(path)}", check=False)
        if done.exit_status != 0:
            raise BadInput(f"--profile-path {path}: no such file on {host}")
        return path, False
    path = f"{home}/.config/fleet/profiles/{engine.profile.name}.yaml"
    changed = await _write(conn, path, Path(engine.profile.path).read_bytes(), 0o600)
    say(f"{name}: profile {engine.profile.path} "
        f"{'copied to' if changed else 'unchanged at'} {host}:{path}")
    return path, changed


async def _write(conn, path: str, data: bytes, mode: int) -> bool:
    """The file at `path` on the host holds `data` with `mode`; False when it did already."""
    async with conn.start_sftp_client() as sftp:
        try:
            async with sftp.open(path, "rb") as f:
                same = await f.read() == data
            same = same and (await sftp.stat(path)).permissions & 0o777 == mode
        except asyncssh.SFTPNoSuchFile:
            same = False
        if same:
            return False
        await sftp.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        async with sftp.open(path, "wb") as f:
            await f.write(data)
        await sftp.chmod(path, mode)
        return True


async def _unit(conn, name: str, host: str, home: str, venv: str, profile: str,
                facts: dict[str, str], options: Options, *, restart: bool,
                say: Say) -> dict[str, Any]:
    start = units.serve_command(venv, profile, name)
    if not options.unit:
        return {"unit": None, "unit_state": "skipped"}
    root = facts.get("uid") == "0"
    path = units.unit_path(name, home, root)
    text = units.unit_text(name, venv, profile, root).encode()
    restart = await _write(conn, path, text, 0o644) or restart
    if not facts.get("systemd"):
        say(f"{name}: systemd does not run on {host}: unit {path} written, not started; "
            f"start the site with: {start}")
        return {"unit": path, "unit_state": "written"}
    user = "" if root else " --user"
    unit = units.unit_name(name)
    # a new fleet, profile or unit: serve restarts on it; else it is started if stopped
    action = "restart" if restart else "start"
    done = await conn.run(f"systemctl{user} daemon-reload && systemctl{user} enable {unit} "
                          f"&& systemctl{user} {action} {unit}", check=False)
    if done.exit_status != 0:
        words = [ln for ln in str(done.stderr or "").splitlines() if ln.strip()]
        why = one_line(words[-1], 300) if words else f"exit {done.exit_status}"
        say(f"{name}: unit {path} written, systemctl{user} failed ({why}); start the site "
            f"with: {start}")
        return {"unit": path, "unit_state": "written"}
    say(f"{name}: unit {unit} enabled and {action}ed on {host}")
    return {"unit": path, "unit_state": "started"}
