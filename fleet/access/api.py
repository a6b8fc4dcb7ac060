"""The access plane as the engine shows it (`engine.access`).

    api = engine.access
    api.route(node) -> Route                      how fleet reaches it, and why
    await api.routes(["web1"]) -> [(Node, Route)] several (all nodes when None)
    await api.targets(names, select) -> [Node]    resolve exec targets (exit 2 if unknown)
    await api.exec(nodes, "uptime", parallel=32, timeout=60, on_line=..., on_result=...)
        -> ExecReport (a job of kind "exec"; .state "cancelled" if cancelled elsewhere)
    await api.exec(nodes, script=Path("post.sh"), script_args=[...])   upload-and-run
    api.commands.add(node, command, via=..., job=...)   an ssh.command event (batched)
    async with api.session("web1") as link:       a pooled connection + a session slot
        await link.conn.create_process(term_type="xterm", term_size=(80, 24))
    link = await api.connection("web1")           pooled connection (direct-tcpip forwards)
    await api.get_pool() -> Pool                  created on first use, closed at engine close

The pool is opened lazily and closed by the engine (`Engine.close`). The facade
registers the job kinds of the access plane with the engine's job runner:
`exec` (a worker or `job retry` in any process can run one) and `post_boot`
(submitted at call-home, fleet.access.postboot).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Sequence

from fleet.access import postboot
from fleet.access.audit import CommandLog
from fleet.access.routes import OperatorIPv6, Route, operator_ipv6, plan
from fleet.errors import BadInput, ReadOnly, UnknownTarget

if TYPE_CHECKING:
    from fleet.access.exec import ExecReport
    from fleet.access.pool import NodeLink, Pool, PoolOptions
    from fleet.core.model import Node
    from fleet.access.liveness import Liveness
    from fleet.engine import Engine
    from fleet.jobs.api import JobsAPI
    from fleet.jobs.runner import JobContext


class AccessAPI:
    def __init__(self, engine: "Engine", jobs: "JobsAPI | None" = None,
                 pool_options: "PoolOptions | None" = None,
                 operator6: OperatorIPv6 | None = None):
        self.engine = engine
        self.pool_options = pool_options
        self._operator6 = operator6
        self._pool: "Pool | None" = None
        self._pool_lock = asyncio.Lock()
        self.commands = CommandLog(engine)  # ssh.command events (fleet.access.audit)
        self.liveness: "Liveness | None" = None
        if jobs is not None:
            jobs.register("exec", self._exec_job, group="exec")
            jobs.register(postboot.KIND, postboot.handler(engine), group=postboot.KIND)

    async def _exec_job(self, ctx: "JobContext", inputs: dict) -> dict:
        from fleet.access.exec import exec_job

        return await exec_job(self, ctx, inputs)

    # -- routes ----------------------------------------------------------------------

    @property
    def operator6(self) -> OperatorIPv6:
        """The operator's routable IPv6 (read once from /proc/net/if_inet6)."""
        if self._operator6 is None:
            self._operator6 = operator_ipv6()
        return self._operator6

    def route(self, node: "Node") -> Route:
        return plan(node, self.engine.profile, self.operator6)

    async def routes(self, names: Sequence[str] | None = None) -> list[tuple["Node", Route]]:
        if names:
            nodes = [await self.engine.node(n) for n in names]
        else:
            nodes = await self.engine.nodes()
        return [(n, self.route(n)) for n in nodes]

    async def targets(self, names: Sequence[str] = (), select: str | None = None) -> list["Node"]:
        """Nodes named and/or selected, in order, each once; unknown names are bad input."""
        out: dict[str, "Node"] = {}
        for name in names:
            out.setdefault(name, await self.engine.node(name))
        if select:
            for n in await self.engine.nodes(select):
                out.setdefault(n.name, n)
        if not out:
            if select:
                raise UnknownTarget(f"no node matches --select {select!r}")
            raise BadInput("name the nodes (NODE... or --select EXPR; --select all for every node)")
        return list(out.values())

    # -- connections ---------------------------------------------------------------------

    async def get_pool(self) -> "Pool":
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    from fleet.access.pool import Pool

                    self._pool = await Pool.create(self.engine, self.pool_options)
        return self._pool

    @property
    def pool(self) -> "Pool":
        if self._pool is None:
            raise RuntimeError("call `await access.get_pool()` first")
        return self._pool

    async def connection(self, name: str) -> "NodeLink":
        node = await self.engine.node(name)
        pool = await self.get_pool()
        return await pool.connection(node, self.route(node))

    @contextlib.asynccontextmanager
    async def session(self, name: str) -> AsyncIterator["NodeLink"]:
        node = await self.engine.node(name)
        pool = await self.get_pool()
        async with pool.session(node, self.route(node)) as link:
            yield link

    # -- exec ------------------------------------------------------------------------------

    async def exec(self, nodes: Sequence["Node"], command: str = "", *, parallel: int = 32,
                   timeout: float = 60.0, retries: int = 1, script: Path | None = None,
                   script_args: Sequence[str] = (), on_line=None, on_result=None,
                   keep_output: bool = False) -> "ExecReport":
        from fleet.access.exec import run_exec

        if self.engine.read_only:
            raise ReadOnly("cannot run commands on nodes: fleet was started with --read-only")
        if parallel < 1:
            raise BadInput("--parallel must be at least 1")
        if timeout <= 0:
            raise BadInput("--timeout must be more than 0")
        if script is None and not command.strip():
            raise BadInput("no command: give it after --, e.g. exec web1 -- uptime")
        if script is not None and not Path(script).is_file():
            raise BadInput(f"--script {script}: no such file")
        await self.get_pool()
        return await run_exec(self, nodes, command, parallel=parallel, timeout=timeout,
                              retries=retries, script=script, script_args=script_args,
                              on_line=on_line, on_result=on_result, keep_output=keep_output)

    def pool_counts(self) -> dict[str, int]:
        """Open pooled connections by kind and connects so far; zeros before the
        pool is opened (for metrics: never opens it)."""
        pool = self._pool
        if pool is None:
            return {"node": 0, "jump": 0, "node_connects": 0, "jump_connects": 0}
        return {**pool.open_connections(), "node_connects": pool.stats["node_connects"],
                "jump_connects": pool.stats["jump_connects"]}

    async def close(self) -> None:
        """The pool and the command log (the engine stops liveness and jobs first)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self.commands.close()

    # -- shells, forwards, checks, liveness -------------------------------------------

    def shell(self, name: str, *, term_type: str = "xterm-256color",
              term_size: tuple[int, int] = (80, 24), record: bool = True):
        """`async with api.shell("web1", term_size=(cols, rows)) as s:` a PTY shell on the
        node's pooled connection, recorded (asciicast v2) with shell.opened/closed events.
        `await s.run(read, write)` bridges it; `s.resize(cols, rows)` follows the view."""
        from fleet.access.shell import ShellSession

        if self.engine.read_only:
            raise ReadOnly("cannot open a shell: fleet was started with --read-only")
        return ShellSession(self, name, term_type=term_type, term_size=term_size,
                            record=record)

    async def forward(self, name: str, spec: str):
        """Start a local forward `[BIND:]LOCAL:[HOST:]REMOTE` through the node's route;
        returns a `Forward` (`.address`, `.close()` / `await .aclose()`), with
        forward.opened / forward.closed events. See fleet.access.forward."""
        from fleet.access.forward import open_forward, parse_forward

        parsed = parse_forward(spec)
        await self.engine.node(name)
        return await open_forward(self, name, parsed)

    async def check(self, name: str, *, timeout: float | None = None) -> dict:
        """One SSH-level liveness check of a node (fleet.access.liveness.check_node)."""
        from fleet.access.liveness import check_node

        return await check_node(self, name, timeout)

    async def http_check(self, name: str, target: str, *, host: str = "127.0.0.1",
                         timeout: float = 10.0) -> dict:
        """GET http://HOST:PORT/PATH from the node (httpx over an SSH channel)."""
        from fleet.access.http_check import check_http, parse_http

        return await check_http(self, name, parse_http(target), host=host, timeout=timeout)

    async def link_check(self, a: str, b: str, *, iperf: bool = False, count: int = 5,
                         seconds: float = 3.0, port: int = 5201) -> dict:
        """ping (and iperf3) from node a to node b; one record (fleet.access.linkcheck)."""
        from fleet.access.linkcheck import link_check

        if self.engine.read_only:
            raise ReadOnly("cannot run link checks: fleet was started with --read-only")
        if count < 1:
            raise BadInput("--count must be at least 1")
        return await link_check(self, a, b, iperf=iperf, count=count, seconds=seconds,
                                port=port)

    def start_liveness(self, interval: float = 30.0, **kw) -> "Liveness":
        """Start (once) the liveness loop as an engine task; returns the `Liveness`.
        The engine stops it at close (`stop_liveness`), before the pool closes."""
        from fleet.access.liveness import Liveness

        live = self.liveness
        if live is None:
            live = self.liveness = Liveness(self.engine, interval, **kw)
        live.start()
        return live

    async def stop_liveness(self) -> bool:
        """Stop the loop; False when none was running."""
        live, self.liveness = self.liveness, None
        if live is None:
            return False
        await live.stop()
        return True
