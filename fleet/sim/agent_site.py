"""A demo site served from afar: its own `fleet --headless serve` process and a
site host where the console starts its agent over SSH, both started and stopped
by the demo (fleet.sim.api.Demo).

For a demo profile's site with an `agent:` block (`demo-east` in the bundled
demo), at the demo's start:

- the site gets a home under the demo's data dir, `demo/sites/<site>/` with its
  own XDG folders (config, data, state, cache), and its own profile there
  (`config/fleet/profiles/<site>.yaml`, fleet.sim.profiles.agent_site_profile),
  written anew from the demo profile at every start;
- `fleet --headless --profile <site> serve` runs in that environment: its own
  store, boot services and simulated machines (a demo of its own, with its
  jump), its output in `demo/sites/<site>/serve.log`;
- the site host (site_host.py) listens on the agent's address, reachable only
  through the agent's jump, and runs the console's
  `fleet --headless --profile <site> agent --site <site>` in that same
  environment, so the agent serves the store the site's serve writes;
- the keys the console must trust are made here first and pinned in the demo's
  store: the site host's key (as the agent host's) and the site's jump key
  (the site's serve finds it in its keys folder and uses it).

The children run on a leash (fleet.sim.leash): when the demo's process dies,
even by SIGKILL, they get SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from fleet.access.keys import KeyStore, operator_key
from fleet.access.trust import agent_pins, jump_pins, store_agent_pins, store_jump_pins
from fleet.core.config import SiteConfig, agent_host_name
from fleet.core.model import HostKey, Severity
from fleet.errors import EnvironmentProblem
from fleet.sim.leash import command as leashed
from fleet.sim.node import SSH_PORT
from fleet.sim.profiles import agent_site_profile, load_data, write_profile_data
from fleet.sim.site_host import SiteHost

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

#: how long the site's serve gets to stop on SIGTERM before SIGKILL (within the
#: engine's STOP_SECONDS for the whole demo)
STOP_SECONDS = 2.5
XDG = {"XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data", "XDG_STATE_HOME": "state",
       "XDG_CACHE_HOME": "cache"}


def agent_sites(engine: "Engine") -> list[SiteConfig]:
    """The demo profile's sites served from afar (an `agent:` with a distributor,
    not served by this process)."""
    return [s for s in engine.profile.sites
            if s.agent is not None and s.distributor and s.name not in engine.here]


class AgentSite:
    def __init__(self, engine: "Engine", site: SiteConfig, jump_address: str):
        assert site.agent is not None
        self.engine = engine
        self.site = site
        # the one address the site host answers: its agent's jump (else the demo's)
        via = site.agent.via
        self.jump_address = engine.profile.jump(via).address if via else jump_address
        self.home = engine.paths.data_dir / "demo" / "sites" / site.name
        self.env = {**os.environ, **{k: str(self.home / v) for k, v in XDG.items()}}
        self.env.pop("FLEET_PROFILE", None)
        self.profile_path = self.home / "config" / "fleet" / "profiles" / f"{site.name}.yaml"
        self.host: SiteHost | None = None
        self.serve: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None
        self._stopping = False

    @property
    def keys(self) -> KeyStore:
        """The site's own keys folder (its serve's data dir)."""
        return KeyStore(self.home / "data" / "fleet" / "keys")

    async def start(self) -> None:
        """Write the site's profile, pin its keys, start its serve and its host."""
        operator = await operator_key(self.engine)
        data = agent_site_profile(load_data(self.engine.profile.path), self.site.name,
                                  folder=self.engine.profile.path.parent,
                                  identity=operator.private_path)
        write_profile_data(self.profile_path, data)
        (self.home / "state").mkdir(parents=True, exist_ok=True)
        host_key = await self._pin_host_key()
        for jump in self.site.jumps:
            await self._pin_jump_key(jump)
        await self._start_serve()
        agent = self.site.agent
        port = SSH_PORT if agent.port == 22 else agent.port  # the jump maps 22, like for nodes
        self.host = SiteHost(agent.host, port, host_key, [operator.public],
                             allowed_peers=(self.jump_address,), env=self.env,
                             cwd=str(self.home))
        try:
            await self.host.start()
        except OSError as err:
            raise EnvironmentProblem(
                f"demo: site {self.site.name}'s host cannot listen on {agent.host}:{port}: "
                f"{err.strerror or err}") from err

    async def _start_serve(self) -> None:
        log_file = open(self.home / "serve.log", "wb")  # this run's words only
        try:
            self.serve = await asyncio.create_subprocess_exec(
                *leashed(os.getpid(), [sys.executable, "-m", "fleet", "--headless",
                                       "--profile", self.site.name, "serve"]),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file, env=self.env, cwd=str(self.home))
        finally:
            log_file.close()
        self._watch = asyncio.ensure_future(self._watch_serve(self.serve))
        log.info("demo: site %s serving from pid %d", self.site.name, self.serve.pid)

    async def _watch_serve(self, proc: asyncio.subprocess.Process) -> None:
        """A serve that ends on its own (a port in use, a crash) is said in an event."""
        status = await proc.wait()
        if self._stopping:
            return
        said = _last_line(self.home / "serve.log")
        await self.engine.record(self.engine.event(
            "demo.site_stopped", self.site.name,
            f"demo: site {self.site.name}'s serve ended (exit {status})"
            + (f": {said}" if said else f"; see {self.home / 'serve.log'}"),
            severity=Severity.ERROR, site=self.site.name, status=status))

    async def _pin_host_key(self) -> asyncssh.SSHKey:
        name = agent_host_name(self.site.name)
        pair, _ = KeyStore(self.engine.paths.keys_dir).generate(
            f"demo-{self.site.name}-host", comment=f"fleet-demo-{name}")
        pin = self._pin(pair)
        if not any(p.key == pin.key for p in await agent_pins(self.engine, self.site.name)):
            await store_agent_pins(self.engine, self.site.name, [pin], self.engine.event(
                "hostkey.pinned", name,
                f"demo: pinned the host key of site {self.site.name}'s agent host "
                f"{self.site.agent.host}: {pair.fingerprint}",
                site=self.site.name, fingerprint=pair.fingerprint, source="demo"))
        return asyncssh.read_private_key(str(pair.private_path))

    async def _pin_jump_key(self, jump: str) -> None:
        from fleet.sim.site import JUMP_KEY_NAME

        # the name the site's own demo looks for (it then uses this key)
        pair, _ = self.keys.generate(JUMP_KEY_NAME, comment="fleet-demo-jump")
        pin = self._pin(pair)
        if not any(p.key == pin.key for p in await jump_pins(self.engine, jump)):
            await store_jump_pins(self.engine, jump, [pin], self.engine.event(
                "hostkey.pinned", jump,
                f"demo: pinned the host key of site {self.site.name}'s jump {jump}: "
                f"{pair.fingerprint}", jump=jump, fingerprint=pair.fingerprint,
                source="demo"))

    def _pin(self, pair) -> HostKey:
        kind, body = pair.public.split()[:2]
        return HostKey(kind, body, pair.fingerprint, "demo", time.time())

    async def stop(self) -> None:
        """The serve (SIGTERM, SIGKILL after STOP_SECONDS) while the site host
        stops with the agents it runs."""
        self._stopping = True
        proc, self.serve = self.serve, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        host, self.host = self.host, None
        if host is not None:
            await host.stop()
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_SECONDS)
            except asyncio.TimeoutError:
                log.warning("demo: site %s's serve did not stop in %gs; killing it",
                            self.site.name, STOP_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""
    return ""
