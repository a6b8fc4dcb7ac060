"""Port forwards through a node's route.

    fleet --headless forward NODE [BIND:]LOCAL:[HOST:]REMOTE

How: a local listener on BIND:LOCAL (default 127.0.0.1; LOCAL 0 picks a free
port), and for each accepted connection a direct-tcpip channel on the node's
**pooled connection** (asyncssh `forward_local_port`), so the node's own sshd
connects to HOST:REMOTE. HOST defaults to 127.0.0.1, i.e. the node's loopback:
services bound to localhost on the node are reachable, and nothing depends on
the jump being allowed to reach arbitrary ports. HOST may be any name or
address the node can reach (its own address, a neighbour). The node's sshd
must allow TCP forwarding (`AllowTcpForwarding`), which fleet's installs do.
direct-tcpip channels don't count against `MaxSessions`.

The forward lives as long as the node's pooled connection: if that dies (the
jump went down), new local connections fail and `forward` exits 1.

Events (written here, so the console and the CLI behave alike): forward.opened
when listening, forward.closed at `close()`/`aclose()`; data = `Forward.record()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass

from fleet.errors import BadInput

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)
_PENDING: set = set()  # forward.closed writes in flight (keep a reference)

_PART = r"(\[[^\]]+\]|[^:]+)"


@dataclass(frozen=True)
class ForwardSpec:
    bind: str
    local_port: int
    host: str
    remote_port: int

    def text(self) -> str:
        return f"{self.bind}:{self.local_port} -> {self.host}:{self.remote_port}"


def _port(text: str, what: str, *, zero: bool = False) -> int:
    if not text.isdigit() or not (0 if zero else 1) <= int(text) <= 65535:
        raise BadInput(f"{what} port {text!r}: give a number 1-65535"
                       + (" (0: any free port)" if zero else ""))
    return int(text)


def _unbracket(text: str) -> str:
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def parse_forward(spec: str) -> ForwardSpec:
    """`LOCAL:REMOTE`, `BIND:LOCAL:REMOTE`, `LOCAL:HOST:REMOTE`,
    `BIND:LOCAL:HOST:REMOTE` (IPv6 in brackets). With three parts, a numeric
    first part is LOCAL (so `8080:web:80` forwards to host web)."""
    parts = re.findall(_PART, spec)
    if ":".join(parts) != spec or not 2 <= len(parts) <= 4:
        raise BadInput(f"forward {spec!r}: use [BIND:]LOCAL:[HOST:]REMOTE, e.g. 8080:80")
    bind, host = "127.0.0.1", "127.0.0.1"
    if len(parts) == 2:
        local, remote = parts
    elif len(parts) == 3:
        if parts[0].isdigit():
            local, host, remote = parts
        else:
            bind, local, remote = parts
    else:
        bind, local, host, remote = parts
    return ForwardSpec(_unbracket(bind), _port(local, "local", zero=True), _unbracket(host),
                       _port(remote, "remote"))


class Forward:
    """A running forward: `.address` is the (bind, port) actually listening."""

    def __init__(self, node: str, spec: ForwardSpec, listener, link, engine: "Engine | None" = None):
        self.node = node
        self.spec = spec
        self.listener = listener
        self.link = link
        self.via = link.via
        self.engine = engine
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return self.spec.bind, self.listener.get_port()

    def record(self) -> dict:
        """The forward's fields (CLI output and the forward.* events' data)."""
        host, port = self.address
        return {"node": self.node, "listen_host": host, "listen_port": port,
                "remote_host": self.spec.host, "remote_port": self.spec.remote_port,
                "via": self.via}

    def text(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"forward {shown}:{port} -> {self.node}:{self.spec.host}:{self.spec.remote_port}"

    async def _event(self, kind: str, message: str) -> None:
        engine = self.engine
        if engine is None or engine.read_only:
            return
        try:
            await engine.record(engine.event(kind, self.node, message, **self.record()))
        except Exception:  # an audit write must not break the forward or its closing
            log.exception("cannot record %s", kind)

    def close(self) -> None:
        """Stop listening; forward.closed is written in the background (await
        `aclose()` to have it written before returning)."""
        if self._closed:
            return
        self._closed = True
        self.listener.close()
        if self.engine is not None and not self.engine.read_only:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to record
                task = asyncio.get_running_loop().create_task(
                    self._event("forward.closed", self.text() + " closed"))
                _PENDING.add(task)
                task.add_done_callback(_PENDING.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.listener.close()
        await self._event("forward.closed", self.text() + " closed")

    async def wait_closed(self) -> None:
        await self.listener.wait_closed()


async def open_forward(api, name: str, spec: ForwardSpec) -> Forward:
    link = await api.connection(name)
    try:
        listener = await link.conn.forward_local_port(spec.bind, spec.local_port, spec.host,
                                                      spec.remote_port)
    except OSError as err:
        from fleet.errors import EnvironmentProblem

        raise EnvironmentProblem(f"cannot listen on {spec.bind}:{spec.local_port}: "
                                 f"{err.strerror or err}") from None
    fwd = Forward(name, spec, listener, link, api.engine)
    await fwd._event("forward.opened", fwd.text() + (f" (via {fwd.via})" if fwd.via else ""))
    return fwd


async def wait_lost(fwd: Forward) -> None:
    """Return when the node's pooled connection carrying the forward is gone
    (cancel it to stop waiting)."""
    await fwd.link.conn.wait_closed()
