"""The connection pool: long-lived SSH connections to jumps, nodes tunnelled over them.

- One connection per jump, with keepalives (5 s x 3 by default), opened on first
  use; node connections keep alive every 30 s. A jump `via` another is tunnelled
  over that one's connection, to any depth.
- Node connections are tunnelled over their jump's connection object (never a
  `tunnel="host"` string, which would open a new jump connection every time)
  and kept for reuse until the pool closes (`engine.on_close`).
- Caps: SSH handshakes in flight per jump (32) and per target address (8), so
  a target with OpenSSH's default `MaxStartups 10:30:100` loses nothing (the
  jump's own sshd sees only the one jump connection);
  sessions (exec/shell/sftp channels) per connection (5: half of `MaxSessions
  10`, since sshd may still count sessions that just closed).
  A tunnelled connect happens in two steps: the jump opens the TCP connection
  (a direct-tcpip channel; not capped by the per-jump handshake cap, so twenty
  blackholed nodes don't queue behind each other), then the SSH handshake runs
  inside it under the cap. Each step is bounded by `connect_timeout`. Opens
  being started are capped per jump (1024), but an open holds its slot only
  until answered or for `open_slot_hold` (0.2 s): 500 blackholed targets pass
  through the slots in well under a second instead of queueing in waves of
  connect_timeout.
- Failover: a site lists jumps in preference order. When a jump fails (connect
  error, or its connection is lost), it is marked down (`jump.down`) and new and
  retried work takes the next one (`jump.failover`). A down jump is retried in
  the background with exponential backoff and jitter; when it answers again
  (`jump.up`) new work prefers it again.
- Operator identity: `operator.ssh.identity` is read once (`read_private_key`)
  and passed as a key object, with the SSH agent off. Without it, fleet's own
  operator key (the data dir's keys/operator, which fleet renders into every
  deployment's authorized keys) when it exists, plus the agent; with neither,
  asyncssh's defaults: the agent at $SSH_AUTH_SOCK and ~/.ssh/id_* keys.
  `~/.ssh/config` is never read: the profile is the only source of routes.

Later layers use `session(node)` (a pooled connection plus a session slot) for
PTY shells and `connection(node)` for direct-tcpip forwards (which don't count
against MaxSessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

import asyncssh

from fleet.access.routes import Route, RouteKind
from fleet.access.trust import FORGETTING_EVENTS, FleetClient, HostKeyRefused, Subject, Trust
from fleet.core.model import Severity
from fleet.errors import BadInput
from fleet.access.keys import OPERATOR, key_store

if TYPE_CHECKING:
    from fleet.core.model import Node
    from fleet.engine import Engine

log = logging.getLogger(__name__)


class AccessError(Exception):
    """Reaching a node failed; the subclass says how, and `kind` is its name in
    exec results and events (unreachable | auth | host-key | command-failed)."""

    kind = "unreachable"

    def __init__(self, message: str, *, lost: bool = False):
        super().__init__(message)
        self.lost = lost  # a pooled connection died (a retry may go another way)


class Unreachable(AccessError):
    """No connection: refused, timed out, no route, a jump down (may pass: retry)."""

    kind = "unreachable"


class AuthFailed(AccessError):
    kind = "auth"


class HostKeyRejected(AccessError):
    """The host key is not one fleet trusts (never retried into)."""

    kind = "host-key"


class CommandFailed(AccessError):
    """Connected, but the step before the command failed (a script upload)."""

    kind = "command-failed"


@dataclass
class PoolOptions:
    keepalive_interval: float = 5.0  # jumps: a silent jump is noticed in ~15-20 s
    keepalive_count_max: int = 3
    node_keepalive_interval: float = 30.0  # nodes: cheap for 1000s; a jump loss reaches
    # its tunnelled connections at once anyway
    handshakes_per_jump: int = 32  # distinct targets behind one jump: each target's
    # own MaxStartups is guarded by handshakes_per_target; 32 keeps the pipeline full
    # while node sshds fork (tests/bench/bench_exec.py, 200 nodes on the shared
    # 2-core box: in-process cold 7.4 s at 8 vs 5.6-6.1 s at 32; the CLI 7.3 s at 16
    # vs 5.4 s at 32)
    # below sshd's default MaxStartups 10 with room: sshd counts a connection as
    # starting until its listener has processed the auth, a moment after the client
    # is in (at 8, 1 of 100 connects to one default sshd was dropped in ~1 run of 4)
    handshakes_per_target: int = 6
    opens_per_jump: int = 1024  # direct-tcpip opens being started at once per jump
    # (1000 nodes, 500 blackholed: 256 slots misclassified ~20 live nodes as
    # unreachable on the 2-core testbed; 1024: none, all classified in 2.6 s)
    open_slot_hold: float = 0.2  # an unanswered open gives its slot back after this
    sessions_per_connection: int = 5  # half of MaxSessions 10: sshd frees a session
    # only after it has processed our CHANNEL_CLOSE, so a wave of finished sessions can
    # still count when the next wave's opens arrive (8 failed ~1 in 2 under load)
    backoff_base: float = 0.5
    backoff_max: float = 30.0


@dataclass
class _JumpLink:
    name: str
    cfg: Any  # JumpConfig
    gate: asyncio.Semaphore
    opens: asyncio.Semaphore
    conn: asyncssh.SSHClientConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    down: bool = False
    failures: int = 0
    generation: int = 0
    next_attempt: float = 0.0
    last_error: AccessError | None = None
    retry_task: asyncio.Task | None = None

    def alive(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()


@dataclass
class NodeLink:
    """A pooled connection to a node."""

    name: str
    conn: asyncssh.SSHClientConnection
    route: Route
    via: str | None  # the jump actually used (None: direct)
    sessions: asyncio.Semaphore
    connected_at: float = field(default_factory=time.monotonic)
    lost: bool = False

    def alive(self) -> bool:
        return not self.lost and not self.conn.is_closed()


class _Pending:
    """The session of a direct-tcpip channel opened before the SSH handshake may
    start: holds what arrives until `attach()` hands the channel to the real
    SSH connection object."""

    def __init__(self):
        self.chan = None
        self.real = None
        self._buffer: list[tuple[bytes, Any]] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    # SSHTCPSession callbacks
    def connection_made(self, chan) -> None:
        self.chan = chan

    def session_started(self) -> None:
        pass

    def data_received(self, data, datatype=None) -> None:
        if self.real is not None:
            self.real.data_received(data, datatype)
        else:
            self._buffer.append((data, datatype))

    def eof_received(self):
        if self.real is not None:
            return self.real.eof_received()
        self._eof = True
        return False

    def connection_lost(self, exc) -> None:
        if self.real is not None:
            self.real.connection_lost(exc)
        else:
            self._lost = (exc,)

    def pause_writing(self) -> None:
        if self.real is not None:
            self.real.pause_writing()

    def resume_writing(self) -> None:
        if self.real is not None:
            self.real.resume_writing()

    def attach(self, real) -> None:
        self.real = real
        real.connection_made(self.chan)
        real.session_started()
        for data, datatype in self._buffer:
            real.data_received(data, datatype)
        self._buffer.clear()
        if self._eof:
            real.eof_received()
        if self._lost is not None:
            real.connection_lost(self._lost[0])


class _OpenedTunnel:
    """What `asyncssh.connect(tunnel=...)` gets for a pre-opened channel: its
    `create_connection` attaches the new SSH connection to that channel."""

    def __init__(self, jump_conn: asyncssh.SSHClientConnection, pending: _Pending):
        self.logger = jump_conn.logger
        self._pending = pending

    async def create_connection(self, session_factory, host, port):
        real = session_factory()
        self._pending.attach(real)
        return self._pending.chan, real


def _encryption_algs() -> list[str]:
    """AES-GCM first: asyncssh's chacha20-poly1305 builds two cipher contexts per
    packet (half the client CPU of a cold fan-out in a profile), AES-GCM one call
    with AES-NI. Both are AEAD ciphers OpenSSH offers by default; the rest of
    asyncssh's defaults follow for servers without GCM."""
    from asyncssh.encryption import get_default_encryption_algs

    first = [b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com"]
    algs = get_default_encryption_algs()
    return [a.decode() for a in first if a in algs] + [a.decode() for a in algs
                                                          if a not in first]


def _coalesce_writes(conn) -> None:
    """Write a jump connection's outgoing packets in one send per event-loop turn.

    Every packet of every node tunnelled over a jump is one `transport.write`,
    and asyncio sends each at once: a syscall per SSH packet (8000 for a cold
    `true` on 200 nodes, the largest item in its profile). Queued writes are
    joined and sent with `call_soon`, which runs in the same loop turn, before
    any close or abort that asyncssh schedules after them."""
    transport = getattr(conn, "_transport", None)
    if not isinstance(transport, asyncio.Transport) or "write" in vars(transport):
        return
    loop = asyncio.get_running_loop()
    write, close = transport.write, transport.close
    pending: list[bytes] = []

    def flush() -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            if not transport.is_closing():
                write(data)

    def buffered(data) -> None:
        if not pending:
            loop.call_soon(flush)
        pending.append(bytes(data))

    def closing() -> None:
        flush()
        close()

    transport.write = buffered  # type: ignore[method-assign]
    transport.close = closing  # type: ignore[method-assign]


def _backoff(failures: int, base: float, cap: float) -> float:
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return delay * random.uniform(0.5, 1.5)


class Pool:
    def __init__(self, engine: "Engine", trust: Trust, options: PoolOptions | None = None,
                 client_keys: Any = (), agent_path: Any = ()):
        self.engine = engine
        self.trust = trust
        self.options = options or PoolOptions()
        ssh = engine.profile.operator.ssh
        self.connect_timeout = float(ssh.connect_timeout)
        self.user = ssh.user
        self._client_keys = client_keys
        self._own_key: Path | None = None  # fleet's own key, not made yet when this began
        self._agent_path = agent_path
        o = self.options
        self._jumps = {j.name: _JumpLink(j.name, j, asyncio.Semaphore(o.handshakes_per_jump),
                                         asyncio.Semaphore(o.opens_per_jump))
                       for j in engine.profile.jumps}
        self._targets: dict[tuple, asyncio.Semaphore] = {}
        self._nodes: dict[str, NodeLink] = {}
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._active: dict[tuple, str] = {}  # route chains -> jump in use
        self._pending_events: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()
        self._closing = False
        self._follower: asyncio.Task | None = None
        self.stats = {"node_connects": 0, "jump_connects": 0, "reused": 0}
        self._ciphers = _encryption_algs()

    @classmethod
    async def create(cls, engine: "Engine", options: PoolOptions | None = None) -> "Pool":
        trust = await Trust.load(engine)
        ssh = engine.profile.operator.ssh
        client_keys: Any = ()
        agent_path: Any = ()
        if ssh.identity is not None:
            path = ssh.identity.expanduser()
            try:
                client_keys = [asyncssh.read_private_key(str(path))]
            except FileNotFoundError:
                raise BadInput(f"operator.ssh.identity {path}: no such file") from None
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as err:
                raise BadInput(f"operator.ssh.identity {path}: cannot use it: {err} "
                               "(an encrypted key needs the SSH agent: leave identity "
                               "unset)") from None
            agent_path = None  # the profile names the key: don't offer agent keys too
        else:
            # fleet's own operator key (the one it puts into deployments'
            # authorized keys) if it has one; the SSH agent is offered as well
            own = key_store(engine).private_path(OPERATOR)
            if own.is_file():
                client_keys = [asyncssh.read_private_key(str(own))]
                agent_path = ()
        pool = cls(engine, trust, options, client_keys, agent_path)
        if ssh.identity is None and not client_keys:  # made later (the demo makes it as
            pool._own_key = own                       # it starts): read it when it is there
        pool._follow_retirements()
        return pool

    # -- nodes retired and keys forgotten (by this process or another) -----------------

    def _follow_retirements(self) -> None:
        sub = self.engine.follow()

        async def follow() -> None:
            try:
                async for event in sub:
                    if event.kind in FORGETTING_EVENTS:
                        self.retire(event.subject)
            finally:
                sub.close()

        self._follower = asyncio.get_running_loop().create_task(follow())
        self._follower.set_name("fleet-pool-retirements")

    def retire(self, name: str) -> bool:
        """Forget what this pool trusts for `name` and close its pooled node
        connection (a released machine's node, or keys an operator forgot): no
        later command reuses a connection to whatever now answers there. True
        when a connection was closed."""
        self.trust.forget(name)
        link = self._nodes.pop(name, None)
        if link is None:
            return False
        link.lost = True
        link.conn.close()
        return True

    def open_connections(self) -> dict[str, int]:
        """Live pooled connections: {"node": n, "jump": n} (for metrics)."""
        nodes = sum(1 for link in self._nodes.values() if link.alive())
        jumps = sum(1 for j in self._jumps.values()
                    if j.conn is not None and not j.conn.is_closed())
        return {"node": nodes, "jump": jumps}

    def spawn(self, coro) -> asyncio.Task:
        """Work on pooled connections that must outlive its caller, such as killing a
        cancelled command; close() waits up to 3 s in all for such work (also work
        spawned while it waits) before it closes the connections."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- events --------------------------------------------------------------------

    def _emit(self, kind: str, subject: str, message: str, *,
              severity: Severity = Severity.INFO, **data: Any) -> None:
        if self.engine.read_only:
            log.info("%s: %s", kind, message)
            return
        event = self.engine.event(kind, subject, message, severity=severity, **data)
        task = asyncio.get_running_loop().create_task(self._write_event(event))
        self._pending_events.add(task)
        task.add_done_callback(self._pending_events.discard)

    async def _write_event(self, event) -> None:
        try:
            await self.engine.record(event)
        except Exception:  # an event must never take the pool down
            log.exception("cannot record event %s", event.kind)

    # -- connecting ------------------------------------------------------------------

    def _target_gate(self, via: str | None, address: str, port: int) -> asyncio.Semaphore:
        key = (via, address, port)
        sem = self._targets.get(key)
        if sem is None:
            sem = self._targets[key] = asyncio.Semaphore(self.options.handshakes_per_target)
        return sem

    def _conn_options(self, subject: Subject, user: str) -> dict:
        o = self.options
        if self._own_key is not None and self._own_key.is_file():
            self._client_keys, self._agent_path = [asyncssh.read_private_key(
                str(self._own_key))], ()
            self._own_key = None
        interval = o.keepalive_interval if subject.kind == "jump" else o.node_keepalive_interval
        return dict(
            username=user, port=subject.port, known_hosts=self.trust.known,
            host_key_alias=subject.name, client_keys=self._client_keys,
            agent_path=self._agent_path, agent_forwarding=False, config=None,
            connect_timeout=self.connect_timeout, encryption_algs=self._ciphers,
            keepalive_interval=interval, keepalive_count_max=o.keepalive_count_max)

    async def _handshake(self, subject: Subject, user: str, *,
                         via: _JumpLink | None, on_lost) -> asyncssh.SSHClientConnection:
        """One SSH connection to subject.address, direct or through `via`."""
        client = FleetClient(self.trust, subject, on_lost)
        opts = self._conn_options(subject, user)
        where = f"{subject.address}:{subject.port}" + (f" via {via.name}" if via else "")
        target_gate = self._target_gate(via.name if via else None, subject.address,
                                        subject.port)
        try:
            async with target_gate:
                if via is None:
                    return await asyncssh.connect(subject.address, client_factory=lambda: client,
                                                  **opts)
                jump_conn = via.conn
                if jump_conn is None or jump_conn.is_closed():
                    raise Unreachable(f"jump {via.name} connection lost",
                                      lost=True)
                pending = _Pending()
                await self._open(via, jump_conn, pending, subject, where)
                try:
                    async with via.gate:
                        return await asyncssh.connect(
                            subject.address, tunnel=_OpenedTunnel(jump_conn, pending),
                            client_factory=lambda: client, **opts)
                except BaseException:
                    if pending.real is None and pending.chan is not None:
                        pending.chan.close()  # never handed over: don't leave it open
                    raise
        except AccessError:
            raise
        except asyncio.TimeoutError:
            raise Unreachable(f"no answer from {where} within connect_timeout "
                                             f"{self.connect_timeout:g}s") from None
        except asyncssh.HostKeyNotVerifiable as err:
            raise (client.refusal or HostKeyRejected(f"{where}: {err}")) from None
        except asyncssh.PermissionDenied as err:
            raise AuthFailed(f"{where}: authentication failed as {user}: "
                                      f"{err.reason}") from None
        except asyncssh.ChannelOpenError as err:
            lost = via is not None and not via.alive()
            raise Unreachable(f"{where}: {err.reason}", lost=lost) from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError) as err:
            if client.refusal is not None:
                raise client.refusal from None
            lost = via is not None and not via.alive()
            raise Unreachable(f"{where}: {err.reason or err}",
                              lost=lost) from None
        except OSError as err:
            raise Unreachable(f"{where}: {err.strerror or err}") from None
        finally:
            if client.verdict is not None:
                await self.trust.settle(client)

    async def _open(self, via: _JumpLink, jump_conn, pending: _Pending, subject,
                    where: str) -> None:
        """The jump's TCP connect to the target (a direct-tcpip channel open),
        bounded by connect_timeout from the moment it is sent. It holds one of the
        jump's open slots only until it is answered or `open_slot_hold` passes:
        a blackholed target never answers, and must not keep live targets (or the
        next blackholed ones) waiting for its whole timeout."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future | None = None
        try:
            async with via.opens:
                opened = asyncio.ensure_future(jump_conn.create_connection(
                    lambda: pending, subject.address, subject.port))
                deadline = loop.time() + self.connect_timeout
                await asyncio.wait({opened}, timeout=min(self.options.open_slot_hold,
                                                         self.connect_timeout))
            await asyncio.wait_for(opened, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise Unreachable(f"no answer from {where} within connect_timeout "
                                             f"{self.connect_timeout:g}s") from None
        except BaseException:
            if opened is not None and not opened.done():
                opened.cancel()
            raise

    async def jump(self, name: str, *, skip_if_down: bool = False) -> asyncssh.SSHClientConnection:
        """The live connection to jump `name` (connecting its `via` chain first)."""
        link = self._jumps.get(name)
        if link is None:
            raise Unreachable(f"no jump named {name!r} in the profile")
        if link.alive():
            return link.conn
        if skip_if_down and link.down and (time.monotonic() < link.next_attempt
                                           or link.lock.locked()):
            # down, and waiting out its backoff or being retried: take the next jump now
            raise link.last_error or Unreachable(f"jump {name} is down")
        seen = link.generation
        async with link.lock:
            if link.alive():
                return link.conn
            if link.generation != seen and link.last_error is not None:
                raise link.last_error  # it failed while we waited: share that answer
            if skip_if_down and link.down and time.monotonic() < link.next_attempt:
                raise link.last_error or Unreachable(f"jump {name} is down")
            return await self._connect_jump(link)

    async def _connect_jump(self, link: _JumpLink) -> asyncssh.SSHClientConnection:
        cfg = link.cfg
        try:
            via = None
            if cfg.via:
                await self.jump(cfg.via)
                via = self._jumps[cfg.via]
            subject = self.trust.subject_for_jump(cfg)
            holder: dict = {}
            conn = await self._handshake(
                subject, cfg.user or self.user, via=via,
                on_lost=lambda exc: self._jump_lost(link, holder.get("conn"), exc))
            holder["conn"] = conn
            _coalesce_writes(conn)  # it carries every tunnelled node's packets
        except (AccessError, HostKeyRefused) as err:
            if isinstance(err, HostKeyRefused):
                err = HostKeyRejected(str(err))
            elif not str(err).startswith("jump "):
                err = type(err)(f"jump {link.name}: {err}")
            self._jump_failed(link, err)
            raise err from None
        self.stats["jump_connects"] += 1
        link.conn = conn
        link.failures = 0
        if link.down:
            link.down = False
            self._emit("jump.up", link.name, f"jump {link.name} is up again",
                       jump=link.name, address=cfg.address)
        return conn

    def _jump_failed(self, link: _JumpLink, err: AccessError) -> None:
        link.failures += 1
        link.generation += 1
        link.last_error = err
        link.next_attempt = time.monotonic() + _backoff(
            link.failures, self.options.backoff_base, self.options.backoff_max)
        if not link.down:
            link.down = True
            self._emit("jump.down", link.name, f"jump {link.name} is down: {err}",
                       severity=Severity.WARNING, jump=link.name, error=str(err))
        self._schedule_retry(link)

    def _jump_lost(self, link: _JumpLink, conn, exc: Exception | None) -> None:
        if self._closing or conn is None or link.conn is not conn:
            return
        link.conn = None
        reason = str(exc) if exc else "closed"
        self._jump_failed(link, Unreachable(
            f"jump {link.name}: connection lost ({reason})", lost=True))

    def _schedule_retry(self, link: _JumpLink) -> None:
        if self._closing or (link.retry_task and not link.retry_task.done()):
            return
        link.retry_task = asyncio.get_running_loop().create_task(self._retry(link))

    async def _retry(self, link: _JumpLink) -> None:
        """Bring a down jump back in the background, with backoff and jitter."""
        while not self._closing and link.down:
            await asyncio.sleep(max(0.0, link.next_attempt - time.monotonic()))
            if self._closing or not link.down:
                return
            with contextlib.suppress(AccessError):
                async with link.lock:
                    if link.alive() or not link.down:
                        return
                    await self._connect_jump(link)
            if link.alive():
                return

    async def connection(self, node: "Node", route: Route) -> NodeLink:
        """A live pooled connection to `node` along `route` (reused when open)."""
        link = self._nodes.get(node.name)
        if link is not None and link.alive() and link.route.target == route.target:
            self.stats["reused"] += 1
            return link
        lock = self._node_locks.setdefault(node.name, asyncio.Lock())
        async with lock:
            link = self._nodes.get(node.name)
            if link is not None and link.alive() and link.route.target == route.target:
                self.stats["reused"] += 1
                return link
            link = await self._connect_node(node, route)
            self._nodes[node.name] = link
            return link

    async def _connect_node(self, node: "Node", route: Route) -> NodeLink:
        if route.kind is RouteKind.UNREACHABLE:
            raise Unreachable(f"no route: {route.reason}")
        subject = self.trust.subject_for_node(node, route.target, route.port)
        user = node.user or self.user
        holder: dict = {}

        def lost(exc):
            link = holder.get("link")
            if link is not None:
                link.lost = True

        try:
            if route.kind.direct:
                conn = await self._handshake(subject, user, via=None, on_lost=lost)
                used = None
            else:
                conn, used = await self._through_jumps(subject, user, route, lost)
        except HostKeyRefused as err:
            raise HostKeyRejected(str(err)) from None
        self.stats["node_connects"] += 1
        link = NodeLink(node.name, conn, route, used,
                        asyncio.Semaphore(self.options.sessions_per_connection))
        holder["link"] = link
        return link

    async def _through_jumps(self, subject, user, route: Route, lost):
        errors: list[str] = []
        chains = route.chains
        for i, chain in enumerate(chains):
            name = chain[-1]
            more = i < len(chains) - 1
            try:
                await self.jump(name, skip_if_down=more)
            except AccessError as err:
                errors.append(str(err))
                continue
            try:
                conn = await self._handshake(subject, user, via=self._jumps[name], on_lost=lost)
            except AccessError as err:
                if err.lost and more:
                    errors.append(str(err))
                    continue
                raise
            self._note_active(route, name)
            return conn, name
        raise Unreachable("; ".join(errors) or "no jump answered", lost=True)

    def _note_active(self, route: Route, name: str) -> None:
        key = route.chains
        before = self._active.get(key)
        self._active[key] = name
        preferred = route.chain[-1]
        if name != preferred and before != name:
            self._emit("jump.failover", preferred,
                       f"jump {preferred} is down; work for {route.node} and its site goes "
                       f"through {name}", severity=Severity.WARNING,
                       **{"from": preferred, "to": name})

    @contextlib.asynccontextmanager
    async def session(self, node: "Node", route: Route) -> AsyncIterator[NodeLink]:
        """A pooled connection with one session slot held (exec, shell, sftp)."""
        link = await self.connection(node, route)
        async with link.sessions:
            yield link

    def cached(self, name: str) -> NodeLink | None:
        link = self._nodes.get(name)
        return link if link is not None and link.alive() else None

    def jump_states(self) -> dict[str, dict]:
        return {n: {"up": l.alive(), "down": l.down, "failures": l.failures,
                    "error": str(l.last_error) if l.last_error and l.down else None}
                for n, l in self._jumps.items()}

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        for link in self._jumps.values():
            if link.retry_task is not None:
                link.retry_task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while self._background and loop.time() < deadline:
            await asyncio.wait(list(self._background), timeout=deadline - loop.time())
        links = list(self._nodes.values())
        self._nodes.clear()
        for link in links:
            link.conn.close()  # queues the node's DISCONNECT (no waiting here)
        # Only direct connections have sockets of their own to wait for. A
        # tunnelled one is a channel of its jump's connection: closing the jump
        # (after its nodes' DISCONNECTs, which the transport flushes first) takes
        # them all at once instead of one close handshake per node through it.
        await _wait_all([l.conn for l in links if l.via is None], 3.0)
        # innermost jumps first: a chain's outer hop carries the inner ones
        depth = {n: len(self.engine.profile.jump_chain(n)) for n in self._jumps}
        jump_conns = []
        for name in sorted(self._jumps, key=lambda n: -depth[n]):
            link = self._jumps[name]
            if link.conn is not None:
                link.conn.close()
                jump_conns.append(link.conn)
                link.conn = None
        await _wait_all(jump_conns, 3.0)
        for link in self._jumps.values():
            if link.retry_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.retry_task
        if self._pending_events:
            await asyncio.gather(*list(self._pending_events), return_exceptions=True)


async def _wait_all(conns, timeout: float) -> None:
    if not conns:
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns),
                                              return_exceptions=True), timeout)
