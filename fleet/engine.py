"""The engine: the one async API that both faces (console and headless) call.

It owns the profile, the store and the change feed, and it is the only place
that applies lifecycle operations, so every change is one transaction that
writes the new state and its events together.

What it is made of, built by `Engine.open` in this order (each may use the
ones before it):

    jobs    the job runner (fleet.jobs.api)
    builds  boot media builds and artifacts; registers the build kinds (fleet.build.api)
    access  SSH access; registers the exec and post_boot kinds (fleet.access.api)
    boot    boot services, built on first use (fleet.boot.api)
    remote  the sites whose boot services run elsewhere, when the face gave
            a way to reach them (fleet.sites.hub): their machines and nodes
            are read from the console's replica, and the commands for them
            (lease, release) go to the site that owns the target

Sites are *here* (this process serves them: the profile's sites without an
`agent:`, or the one `site=` names, as on a site's own host) or remote.

A site (`start_site`) starts boot services, the demo, the job worker and
liveness, in that order (START_ORDER); `stop_site` stops them in
SITE_STOP_ORDER and `close` stops everything in CLOSE_ORDER, which begins
with SITE_STOP_ORDER: whoever stops a site, the parts stop in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol

from fleet.core import lifecycle as lc
from fleet.core.model import (LEASED_STATES, Artifact, Distributor, Event, Job, Machine,
                              MachineState, Node, Severity)
from fleet.core.select import SelectError, parse_selector
from fleet.core.values import check_hostname, check_ipv4, parse_mac
from fleet.errors import BadInput, Conflict, EnvironmentProblem, ReadOnly, UnknownTarget
from fleet.oui import nic_vendor
from fleet.paths import Paths
from fleet.profile import Profile, load_profile
from fleet.store.db import Store
from fleet.store.feed import ChangeFeed, Subscription
from fleet.tokens import TokenSigner

if TYPE_CHECKING:
    from fleet.access.api import AccessAPI
    from fleet.access.pool import PoolOptions
    from fleet.access.routes import OperatorIPv6
    from fleet.boot.api import BootAPI
    from fleet.build.api import BuildsAPI
    from fleet.jobs.api import JobsAPI

log = logging.getLogger(__name__)
#: one line per part a site starts or stops ("started boot", "stopped demo"...)
site_log = logging.getLogger("fleet.site")

Clock = Callable[[], float]

#: close: the channels to remote sites first (they ride the access plane's pool)
#: the parts of a running site, in the order `start_site` starts them
START_ORDER = ("boot", "demo", "worker", "liveness")
#: what `stop_site` stops, in this order: the demo's machines first (they use the
#: services), liveness, the job worker (no new work), then the boot services
SITE_STOP_ORDER = ("demo", "liveness", "worker", "boot")
#: everything `close` stops, in this order: the site, then the job runner (running
#: jobs interrupted: after the boot services, so a late call-home cannot submit
#: into a closed runner; before the pool its exec jobs use, so they can still
#: kill their remote commands), then the access plane; the feed and store last
CLOSE_ORDER = ("remote", *SITE_STOP_ORDER, "jobs", "access")
#: how long one part may take to stop before the others go on without it
STOP_SECONDS = 3.0


@dataclass(frozen=True)
class Acting:
    """Who a command acts for, and what commits with it: `by` goes into the data
    of every event its transitions write; `then(tx, transition)` runs inside the
    same transaction (the site agent keeps the command's idempotency key there,
    and may raise to refuse a transition that changed nothing)."""

    by: dict[str, Any] | None = None
    then: Callable[[Any, lc.Transition], Awaitable[None]] | None = None


_acting: ContextVar[Acting | None] = ContextVar("fleet_acting", default=None)


class Demo(Protocol):
    """A simulated site beside the boot services (fleet.sim.api.Demo)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


#: prepares (not starts) the demo of an engine's profile: its files are in
#: place before the boot services answer (fleet.sim.api.prepare_demo)
DemoFactory = Callable[["Engine"], Demo]


class RemoteSites(Protocol):
    """The sites this process does not serve, as the console sees them through
    their agents (fleet.sites.hub.SiteHub)."""

    async def machines(self) -> list[Machine]: ...

    async def machine(self, mac: str) -> tuple[str, Machine] | None: ...

    async def nodes(self) -> list[Node]: ...

    async def first_page(self, limit: int) -> tuple[list[Machine], int, list[Node], int]: ...

    async def stale(self) -> list[str]: ...

    async def lease(self, site: str, mac: str, deployment: str, hostname: str | None,
                    address: str | None) -> Machine: ...

    async def release(self, site: str, mac: str, wipe: bool) -> lc.Released: ...

    async def switch_distributor(self, site: str, enabled: bool) -> Distributor: ...

    async def jobs(self) -> list[tuple[str, dict[str, Any]]]: ...

    async def job_command(self, site: str, op: str, job: int) -> dict[str, Any]: ...

    #: the remote sites by name
    sites: Mapping[str, Any]

    def hold(self) -> None: ...

    async def close(self) -> None: ...


#: makes the remote sites of an engine (the face chooses: fleet.sites.hub.SiteHub)
RemoteFactory = Callable[["Engine"], RemoteSites]


class Engine:
    def __init__(self, profile: Profile, store: Store, feed: ChangeFeed, paths: Paths, *,
                 read_only: bool = False, clock: Clock = time.time, site: str | None = None):
        self.profile = profile
        #: the sites this process serves (binds their boot services)
        self.here = here_sites(profile, site)
        self.store = store
        self.feed = feed
        self.paths = paths
        self.read_only = read_only
        self.clock = clock
        self.tokens = TokenSigner(paths.secret_file(profile.name))
        # MAC -> state, kept current from the change feed: the boot services'
        # hot path reads it and never awaits the database.
        self.machine_states: dict[str, MachineState] = {}
        self._view_sub: Subscription | None = None
        self._tasks: list[asyncio.Task] = []
        self._sightings = SightingRecorder(self)
        # the facades, built by `open` (see the module docstring for the order)
        self.jobs: JobsAPI
        self.builds: BuildsAPI
        self.access: AccessAPI
        self.demo: Demo | None = None
        self.remote: RemoteSites | None = None
        self._worker: asyncio.Task | None = None
        self._stuck_parts: set[str] = set()  # parts that did not stop in time

    # -- opening and closing ----------------------------------------------------

    @classmethod
    async def open(cls, profile: Profile | str | Path, *, read_only: bool = False,
                   paths: Paths | None = None, clock: Clock = time.time,
                   pool_options: "PoolOptions | None" = None,
                   operator6: "OperatorIPv6 | None" = None,
                   builds: "BuildsAPI | None" = None,
                   access: "AccessAPI | None" = None,
                   site: str | None = None,
                   remote: RemoteFactory | None = None) -> "Engine":
        """Open the store and build the facades. `pool_options`/`operator6` tune
        the access plane's pool; `builds`/`access` replace those facades (a
        console test's stand-ins). `site`: the one site this process serves (a
        site host's serve and agent); `remote` reaches the others."""
        if not isinstance(profile, Profile):
            profile = load_profile(profile)
        here = here_sites(profile, site)  # BadInput for an unknown site: before any file
        paths = paths or Paths.default()
        store = await Store.open(profile.store or paths.default_store(profile.name))
        feed = ChangeFeed(store)
        engine = cls(profile, store, feed, paths, read_only=read_only, clock=clock, site=site)
        try:
            engine._compose(pool_options, operator6, builds, access)
            if remote is not None and any(s.name not in here for s in profile.sites):
                engine.remote = remote(engine)
            if not read_only:
                await engine._sync_profile()
            await feed.start()
            await engine._start_view()
            if not read_only:
                # jobs a dead process left running or queued become interrupted
                await engine.jobs.start()
        except BaseException:
            await feed.stop()
            await store.close()
            raise
        return engine

    def _compose(self, pool_options: "PoolOptions | None", operator6: "OperatorIPv6 | None",
                 builds: "BuildsAPI | None", access: "AccessAPI | None") -> None:
        """The facades, in this order: the later ones register their job kinds
        with the runner. Cheap: their heavy modules load on first use."""
        from fleet.access.api import AccessAPI
        from fleet.build.api import BuildsAPI
        from fleet.jobs.api import JobsAPI

        self.jobs = JobsAPI(self)
        self.builds = builds if builds is not None else BuildsAPI(self, self.jobs)
        self.access = access if access is not None else AccessAPI(
            self, self.jobs, pool_options, operator6)

    # -- a site: boot services, demo, job worker, liveness ----------------------------

    async def start_site(self, *, demo: DemoFactory | None = None,
                         liveness_interval: float = 30.0) -> None:
        """Start what serves a site, in START_ORDER: the boot services (raises
        EnvironmentProblem when a port cannot be bound), the profile's demo
        (`demo` makes it; none without a `demo:` section), the job worker (runs
        jobs other processes queued), the liveness loop. Both faces call this."""
        self._writable("serve a site")
        self._check_site_files()
        try:
            prepared = (demo(self) if demo is not None and self.profile.demo is not None
                        else None)
            await self.boot.start_services()
            site_log.info("started boot")
            if prepared is not None:
                await prepared.start()
                self.demo = prepared
                site_log.info("started demo")
        except OSError as err:  # a file the site writes: permissions, a full disk
            where = f"{err.filename}: " if err.filename else ""
            raise EnvironmentProblem(
                f"cannot start the site: {where}{err.strerror or err}") from err
        self._start_worker()
        site_log.info("started worker")
        self.access.start_liveness(interval=liveness_interval)
        site_log.info("started liveness")

    def _check_site_files(self) -> None:
        """Before serving: the data folder takes files and the token secret is
        usable, so a broken setup stops here with one line instead of failing
        every install later."""
        folder = self.paths.data_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot write in the data folder {folder}: {err.strerror or err}") from err
        self.tokens.check()

    def _start_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            return

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("job worker stopped: %s", task.exception())

        self._worker = asyncio.ensure_future(self.jobs.run_worker())
        self._worker.set_name("fleet-job-worker")
        self._worker.add_done_callback(done)

    async def stop_site(self) -> None:
        """Stop what `start_site` started, in SITE_STOP_ORDER (idempotent; the
        engine stays open). Shielded: a second signal must not leave sockets open."""
        await asyncio.shield(self._stop(SITE_STOP_ORDER))

    async def close(self) -> None:
        try:
            await self._stop(CLOSE_ORDER)
            await self._sightings.flush()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.clear()
        finally:
            # whatever failed above: the feed and the store always close (the
            # store's worker thread would otherwise keep the process from exiting)
            try:
                await self.feed.stop()
            finally:
                await self.store.close()

    async def _stop(self, parts: tuple[str, ...]) -> None:
        """Stop each part within STOP_SECONDS: one that hangs (or swallows its
        cancellation) is left behind with a warning and the others still stop."""
        for part in parts:
            if part in self._stuck_parts:
                continue  # given up on once; trying again would only wait again
            stopping = asyncio.ensure_future(self._stop_part(part))
            done, _ = await asyncio.wait({stopping}, timeout=STOP_SECONDS)
            if not done:
                stopping.cancel()  # not awaited: it may never finish
                self._stuck_parts.add(part)
                log.warning("%s did not stop within %gs; going on without it",
                            part, STOP_SECONDS)
                continue
            try:
                if stopping.result():
                    site_log.info("stopped %s", part)
            except Exception:  # one failing part must not leak the others
                log.exception("error while stopping %s", part)

    async def _stop_part(self, part: str) -> bool:
        """Stop one part; False when it was not running."""
        if part == "remote":
            remote, self.remote = self.remote, None
            if remote is None:
                return False
            await remote.close()
        elif part == "demo":
            demo, self.demo = self.demo, None
            if demo is None:
                return False
            await demo.stop()
        elif part == "liveness":
            access = getattr(self, "access", None)
            if getattr(access, "liveness", None) is None:
                return False
            return await access.stop_liveness()
        elif part == "worker":
            worker, self._worker = self._worker, None
            if worker is None:
                return False
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        elif part == "jobs":
            if getattr(self, "jobs", None) is None:
                return False
            await self.jobs.close()
        elif part == "boot":
            boot = self.__dict__.get("boot")  # built on first use: maybe never
            if boot is None or not boot.started:
                return False
            await boot.stop_services()
        elif part == "access":
            access = getattr(self, "access", None)
            if access is None:
                return False
            await access.close()
        return True

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        """A background task the engine cancels at close."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)
        return task

    async def _sync_profile(self) -> None:
        """Declared nodes follow the profile: added, updated, and removed when the
        profile no longer declares them. Registered nodes are never touched."""
        # name -> source only: loading 10,000 registered nodes here cost 0.3 s of start-up
        existing = await self.store.nodes.sources()
        declared = {n.name for n in self.profile.nodes}
        async with self.store.transaction() as tx:
            for cfg in self.profile.nodes:
                old = existing.get(cfg.name)
                if old is not None and old != "profile":
                    continue  # a registered node of the same name wins
                node = Node(name=cfg.name, site=cfg.site, address=cfg.address,
                            public_ipv4=cfg.public_ipv4, ipv6=cfg.ipv6, port=cfg.port,
                            user=cfg.user, labels=dict(cfg.labels), source="profile")
                await self.store.nodes.save(tx, node)
            for name, old in existing.items():
                if old == "profile" and name not in declared:
                    await self.store.nodes.delete(tx, name)

    async def _start_view(self) -> None:
        self.machine_states.update(await self.store.machines.states())
        self._view_sub = self.feed.subscribe()
        self.spawn(self._follow_view(self._view_sub), "fleet-machine-view")

    async def _follow_view(self, sub: Subscription) -> None:
        async for event in sub:
            if event.kind.startswith("machine.") and "state" in event.data:
                self.machine_states[event.subject] = MachineState(event.data["state"])

    # -- boot services (built on first use: most commands never serve) ----------------

    @cached_property
    def boot(self) -> "BootAPI":
        """Boot services: policy, HTTP/DHCP/TFTP servers, call-home (fleet.boot.api)."""
        from fleet.boot.api import BootAPI

        return BootAPI(self)

    # -- information ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        p = self.paths
        return {
            "profile": self.profile.name,
            "profile_file": str(self.profile.path),
            "store": str(self.store.path),
            "config_dir": str(p.config_dir),
            "config_file": str(p.config_file),
            "user_profiles_dir": str(p.user_profiles_dir),
            "user_themes_dir": str(p.user_themes_dir),
            "data_dir": str(p.data_dir),
            "keys_dir": str(p.keys_dir),
            "secret_file": str(p.secret_file(self.profile.name)),
            "state_dir": str(p.state_dir),
            "logs_dir": str(p.logs_dir),
            "recordings_dir": str(p.recordings_dir),
            "cache_dir": str(p.cache_dir),
            "artifacts_dir": str(p.artifacts_dir),
            "read_only": self.read_only,
        }

    # -- machines ---------------------------------------------------------------

    async def machines(self, state: MachineState | str | None = None, *,
                       everywhere: bool = True) -> list[Machine]:
        """The machines of every site (`everywhere`), or of the sites served here
        only (what this process's own machinery acts on)."""
        if isinstance(state, str):
            try:
                state = MachineState(state)
            except ValueError:
                names = ", ".join(s.value for s in MachineState)
                raise BadInput(f"unknown state {state!r}; one of: {names}") from None
        machines = await self.store.machines.list(state)
        if self.remote is None or not everywhere:
            return machines
        there = [m for m in await self.remote.machines() if state is None or m.state == state]
        return sorted(machines + there, key=lambda m: (m.first_seen, m.mac))

    async def machine(self, mac: str) -> Machine:
        mac = _mac(mac)
        machine = await self.store.machines.get(mac)
        if machine is None and self.remote is not None:
            found = await self.remote.machine(mac)
            machine = found[1] if found else None
        if machine is None:
            raise UnknownTarget(f"unknown MAC {mac}: no machine with it has been seen")
        return machine

    async def _remote_owner(self, mac: str) -> str | None:
        """The remote site that holds `mac`, when this process's store does not."""
        if self.remote is None or await self.store.machines.get(mac) is not None:
            return None
        found = await self.remote.machine(mac)
        return found[0] if found else None

    async def find_machine(self, mac: str) -> Machine | None:
        """The machine with this MAC, or None (also for text that is not a MAC)."""
        try:
            mac = parse_mac(mac)
        except ValueError:
            return None
        machine = await self.store.machines.get(mac)
        if machine is None and self.remote is not None:
            found = await self.remote.machine(mac)
            return found[1] if found else None
        return machine

    async def lease(self, mac: str, deployment: str, hostname: str | None = None,
                    address: str | None = None) -> Machine:
        self._writable("lease")
        mac = _mac(mac)
        try:
            self.profile.deployment(deployment)
        except KeyError:
            known = ", ".join(d.name for d in self.profile.deployments) or "none"
            raise UnknownTarget(
                f"unknown deployment {deployment!r}; the profile has: {known}") from None
        try:
            hostname = check_hostname(hostname) if hostname else _default_hostname(mac)
            address = check_ipv4(address) if address else None
        except ValueError as err:
            raise BadInput(str(err)) from None
        if (site := await self._remote_owner(mac)) is not None:
            assert self.remote is not None
            return await self.remote.lease(site, mac, deployment, hostname, address)
        now = self.clock()
        async with self.store.transaction() as tx:
            machine = await self._machine_in(mac)
            await self._check_hostname_free(tx, hostname, mac)
            if machine.lease is not None and machine.state in LEASED_STATES:
                lease_id = machine.lease.id  # an identical re-lease is a no-op
            else:
                lease_id = await self.store.leases.new_id(tx, mac, now)
            op = lc.LeaseOp(lease_id, deployment, hostname, address)
            transition = self._apply(machine, op, now)
            await self._commit(tx, transition)
        return transition.machine

    async def _check_hostname_free(self, tx, hostname: str, mac: str) -> None:
        """A hostname belongs to one machine: refused when another machine's lease
        or registered node holds it (a call-home would replace that node)."""
        held = await self.store.leases.holder(tx, hostname, mac)
        if held is not None:
            raise Conflict(f"hostname {hostname} is in use: {held[0]} holds it (leased to "
                           f"{held[1]}); choose another name or release that machine")
        node = await self.store.nodes.holder_of(tx, hostname)
        if node is not None and node[0] == "callhome" and node[1] and node[1] != mac:
            raise Conflict(f"hostname {hostname} is in use: node {hostname} was registered "
                           f"by {node[1]}; release {node[1]} to retire it, or choose "
                           "another name")

    async def release(self, mac: str, wipe: bool = False) -> Machine:
        """Release a machine (see `release_outcome`); the machine as it is now."""
        return (await self.release_outcome(mac, wipe)).machine

    async def release_outcome(self, mac: str, wipe: bool = False) -> lc.Released:
        """Give a machine back: its lease ends and the node it registered is
        retired (gone from `nodes`, its pinned host keys with it; every fleet
        process's pool closes its connections on the `node.retired` event).
        A machine holding no lease: nothing changes (said so), unless `wipe`
        asks for a deliberate wipe; a plain release of a machine waiting to be
        wiped cancels the wipe."""
        self._writable("release")
        mac = _mac(mac)
        if (site := await self._remote_owner(mac)) is not None:
            assert self.remote is not None
            return await self.remote.release(site, mac, wipe)
        now = self.clock()
        async with self.store.transaction() as tx:
            machine = await self._machine_in(mac)
            transition = self._apply(machine, lc.Release(wipe=wipe), now)
            if machine.lease is not None and transition.changed:
                await self.store.leases.end(tx, machine.lease.id, now)
            await self._commit(tx, transition)
            retired = await self._retire_nodes(tx, machine, now)
        changed = transition.changed or bool(retired)
        message = _release_message(machine, transition, wipe)
        if retired:
            message += f"; node {', '.join(retired)} retired"
        return lc.Released(transition.machine, changed, message,
                           retired[0] if retired else None)

    async def _retire_nodes(self, tx, machine: Machine, now: float) -> list[str]:
        """Delete the nodes `machine` registered (their pins go with them), each
        with a `node.retired` event."""
        names = await self.store.nodes.registered_by(tx, machine.mac)
        acting = _acting.get()
        by = {"by": dict(acting.by)} if acting is not None and acting.by else {}
        events = []
        for name in names:
            await self.store.nodes.delete(tx, name)
            events.append(Event(
                kind="node.retired", subject=name, ts=now,
                message=f"node {name} retired: its machine {machine.mac} was released; "
                        "its pinned host keys are dropped",
                data={"node": name, "mac": machine.mac, **by}))
        if events:
            await self.store.events.append(tx, _by_whom(events))
        return names

    async def advance(self, mac: str, op: lc.Operation) -> lc.Transition:
        """Apply a lifecycle operation reported by the boot services or a timer."""
        now = self.clock()
        async with self.store.transaction() as tx:
            machine = await self._machine_in(_mac(mac))
            transition = self._apply(machine, op, now)
            await self._commit(tx, transition)
        return transition

    def callhome_token(self, machine: Machine) -> str:
        if machine.lease is None:
            raise BadInput(f"{machine.mac} has no lease, so no call-home token")
        return self.tokens.issue(machine.lease.id, machine.mac)

    async def _machine_in(self, mac: str) -> Machine:
        machine = await self.store.machines.get(mac)
        if machine is None:
            raise UnknownTarget(f"unknown MAC {mac}: no machine with it has been seen")
        return machine

    @staticmethod
    def _apply(machine: Machine, op: lc.Operation, now: float) -> lc.Transition:
        try:
            return lc.apply(machine, op, now)
        except lc.IllegalTransition as err:
            raise Conflict(str(err)) from None

    @staticmethod
    @contextlib.contextmanager
    def acting(acting: Acting):
        """Lifecycle commands inside this block (in this task) carry `acting`."""
        token = _acting.set(acting)
        try:
            yield
        finally:
            _acting.reset(token)

    async def _commit(self, tx, transition: lc.Transition) -> None:
        acting = _acting.get()
        if transition.changed:
            await self.store.machines.save(tx, transition.machine)
            await self.store.events.append(tx, _by_whom(transition.events))
        if acting is not None and acting.then is not None:
            await acting.then(tx, transition)

    # -- sightings (boot services report what they saw; never awaited on the hot path)

    def record_sighting(self, mac: str, **facts: Any) -> None:
        """Note that a machine was seen. Cheap and synchronous: the write happens
        in a batch shortly after, in one transaction."""
        self._sightings.add(mac, self.clock(), facts)

    async def flush_sightings(self) -> None:
        await self._sightings.flush()

    # -- nodes ------------------------------------------------------------------

    async def nodes(self, select: str | None = None, *, everywhere: bool = True) -> list[Node]:
        """Nodes of every site (`everywhere`), or of this process's store only."""
        nodes = await self.store.nodes.list()
        if self.remote is not None and everywhere:
            mine = {n.name for n in nodes}
            nodes += [n for n in await self.remote.nodes() if n.name not in mine]
        if not select:
            return nodes
        try:
            selector = parse_selector(select)
        except SelectError as err:
            raise BadInput(str(err)) from None
        return [n for n in nodes if selector.matches(n)]

    async def first_page(self, limit: int) -> tuple[list[Machine], int, list[Node], int]:
        """The first `limit` machines (by MAC) and nodes (by name), and how many
        there are: a console's first screen, before the whole lists arrive."""
        store = self.store
        machines, n_machines = await store.machines.first(limit), await store.machines.count()
        nodes, n_nodes = await store.nodes.first(limit), await store.nodes.count()
        if self.remote is not None:  # the remote sites' first rows, from the replica
            far_m, far_n_machines, far_n, far_n_nodes = await self.remote.first_page(limit)
            machines = sorted(machines + far_m, key=lambda m: m.mac)[:limit]
            mine = {n.name for n in nodes}
            nodes = sorted(nodes + [n for n in far_n if n.name not in mine],
                           key=lambda n: n.name)[:limit]
            n_machines, n_nodes = n_machines + far_n_machines, n_nodes + far_n_nodes
        return machines, n_machines, nodes, n_nodes

    async def find_node(self, name: str) -> Node | None:
        node = await self.store.nodes.get(name)
        if node is None and self.remote is not None:
            node = next((n for n in await self.remote.nodes() if n.name == name), None)
        return node

    async def node(self, name: str) -> Node:
        node = await self.find_node(name)
        if node is None:
            raise UnknownTarget(f"unknown node {name!r}")
        return node

    # -- distributors -------------------------------------------------------------

    async def distributors(self) -> list[Distributor]:
        switched = await self.store.distributors.enabled()
        out = []
        for site in self.profile.sites:
            d = site.distributor
            if d is None or site.name not in self.here:
                continue
            out.append(Distributor(
                name=site.name, site=site.name, address=d.address, interface=d.interface,
                enabled=switched.get(site.name, d.enabled),
                artifacts=tuple(await self.store.distributors.artifacts(site.name))))
        return out

    async def switch_distributor(self, name: str, enabled: bool) -> Distributor:
        """Switch a site's boot services on or off (idempotent; an event when it changes)."""
        self._writable("switch a distributor")
        current = {d.name: d for d in await self.distributors()}
        if name not in current and self.remote is not None and name in self.remote.sites:
            return await self.remote.switch_distributor(name, enabled)
        if name not in current:
            known = ", ".join(current) or "none"
            raise UnknownTarget(f"unknown distributor {name!r}; the profile has: {known}")
        if current[name].enabled == enabled:
            return current[name]
        now = self.clock()
        word = "on" if enabled else "off"
        async with self.store.transaction() as tx:
            await self.store.distributors.set_enabled(tx, name, enabled, now)
            await self.store.events.append(tx, [self.event(
                f"distributor.{word}", name, f"distributor {name} switched {word}",
                enabled=enabled)])
        return replace(current[name], enabled=enabled)

    # -- events -------------------------------------------------------------------

    async def events(self, limit: int = 100, subject: str | None = None) -> list[Event]:
        return await self.store.events.latest(limit, subject)

    async def last_event_id(self) -> int:
        return await self.store.events.max_id()

    # -- jobs and artifacts, as stored (the runner: `engine.jobs`; builds: `engine.builds`)

    async def recent_jobs(self, limit: int = 500) -> list[Job]:
        return await self.store.jobs.list(limit=limit)

    async def find_job(self, job_id: int) -> Job | None:
        return await self.store.jobs.get(job_id)

    async def artifacts(self) -> list[Artifact]:
        return await self.store.artifacts.list()

    def follow(self, after_id: int | None = None) -> Subscription:
        """Every event after `after_id` (from the store), then live ones, from this
        process or any other sharing the store."""
        return self.feed.subscribe(after_id)

    async def record(self, *events: Event) -> None:
        """Write events that are not lifecycle transitions (rejections, audits...)."""
        self._writable("record events")
        async with self.store.transaction() as tx:
            await self.store.events.append(tx, events)

    def event(self, kind: str, subject: str, message: str, *,
              severity: Severity = Severity.INFO, **data: Any) -> Event:
        return Event(kind=kind, subject=subject, message=message, ts=self.clock(),
                     severity=severity, data=data)

    # -- helpers ------------------------------------------------------------------

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnly(f"cannot {what}: fleet was started with --read-only")


def here_sites(profile: Profile, site: str | None) -> frozenset[str]:
    """The sites a process serves: `site` (a site host's serve or agent), else
    every site of the profile without an `agent:` (those run here)."""
    names = [s.name for s in profile.sites]
    if site is None:
        return frozenset(s.name for s in profile.sites if s.agent is None)
    if site not in names:
        raise BadInput(f"unknown site {site!r}; the profile has: {', '.join(names) or 'none'}")
    return frozenset({site})


def _by_whom(events: tuple[Event, ...] | list[Event]) -> tuple[Event, ...] | list[Event]:
    """The events with who asked (`by`) in their data, inside Engine.acting."""
    acting = _acting.get()
    if acting is None or not acting.by:
        return events
    return tuple(replace(e, data={**e.data, "by": dict(acting.by)}) for e in events)


def _mac(text: str) -> str:
    try:
        return parse_mac(text)
    except ValueError as err:
        raise BadInput(str(err)) from None


def _release_message(before: Machine, transition: lc.Transition, wipe: bool) -> str:
    mac = before.mac
    if not transition.changed:
        if before.state is MachineState.WIPING:
            return f"{mac} is already waiting to be wiped; nothing changed"
        return f"{mac} holds no lease; nothing to release"
    after = transition.machine.state
    if before.state is MachineState.WIPING:
        return f"{mac}: wipe cancelled; back in the pool"
    if after is MachineState.WIPING:
        if before.lease is None:
            return f"{mac} held no lease; its next boot wipes it"
        return f"{mac} released; its next boot wipes it"
    return f"{mac} released; back in the pool"


def _default_hostname(mac: str) -> str:
    return "node-" + mac.replace(":", "")[-6:]


class SightingRecorder:
    """Batches "machine seen" reports into one transaction every `interval`.

    New MACs become `discovered` machines (with their event); known ones get
    last_seen and whatever new facts they sent. 1000 machines booting at once
    cost a handful of transactions, not thousands.
    """

    def __init__(self, engine: Engine, interval: float = 0.25):
        self.engine = engine
        self.interval = interval
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._complained = -60.0

    def add(self, mac: str, ts: float, facts: dict[str, Any]) -> None:
        old = self._pending.get(mac)
        if old is not None:
            merged = {**old[1], **{k: v for k, v in facts.items() if v is not None}}
            first = old[1].get("_first_ts", old[0])
            merged["_first_ts"] = first
            facts = merged
        self._pending[mac] = (ts, facts)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.interval)
        try:
            await self.flush()
        except EnvironmentProblem as err:
            # a full disk, say: these sightings are lost (the machines are seen
            # again at their next poll); one line a minute, not a traceback each time
            now = time.monotonic()
            if now - self._complained >= 60.0:
                self._complained = now
                log.error("%s (sightings are not recorded until it can write)", err)

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending or self.engine.read_only:
                self._pending.clear()
                return
            batch, self._pending = self._pending, {}
            store = self.engine.store
            known = self.engine.machine_states
            async with store.transaction() as tx:
                touches = []
                for mac, (ts, facts) in batch.items():
                    first_ts = facts.pop("_first_ts", ts)
                    if mac in known or await store.machines.get(mac) is not None:
                        touches.append((mac, ts, facts))
                        continue
                    columns = {k: v for k, v in facts.items()
                               if k in _DISCOVER_FIELDS and v is not None}
                    columns.setdefault("nic_vendor", nic_vendor(mac))
                    t = lc.discover(mac, first_ts, **columns)
                    machine = replace(t.machine, last_seen=ts)
                    await store.machines.save(tx, machine)
                    await store.events.append(tx, t.events)
                    known[mac] = machine.state
                await store.machines.touch(tx, touches)


_DISCOVER_FIELDS = {"uuid", "arch", "vendor_class", "nic_vendor", "ipxe_version",
                    "ipxe_busid", "distributor", "interface", "last_ip", "stage", "info"}
