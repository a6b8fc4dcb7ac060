"""HTTP checks through a node's route (Sahara's "HTTP through the proxy node").

    fleet --headless check NODE --http PORT[/PATH] [--http-host HOST]

An httpx client whose transport opens each TCP connection as an SSH
direct-tcpip channel on the node's pooled connection (`SSHNetworkBackend`, an
httpcore network backend): the node's sshd connects to HOST:PORT (HOST
defaults to 127.0.0.1, the node's loopback, as with `forward`). No local port
is opened, nothing listens, and keep-alive HTTP connections ride the same SSH
connection. `http_client(api, node)` gives an `httpx.AsyncClient` for any other
use (plain http:// only: TLS over the channel is not wired up).
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass

import asyncssh
import httpcore
import httpx

from fleet.errors import BadInput


class _ChannelStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader, writer):
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        import asyncio

        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {timeout}s") from None
        except (asyncssh.Error, OSError) as err:
            raise httpcore.ReadError(str(err)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await self._writer.drain()
        except (asyncssh.Error, OSError) as err:
            raise httpcore.WriteError(str(err)) from None

    async def aclose(self) -> None:
        self._writer.close()

    def get_extra_info(self, info: str) -> typing.Any:
        return None


class SSHNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore connects through `conn` (an asyncssh connection): direct-tcpip."""

    def __init__(self, conn: asyncssh.SSHClientConnection):
        self.conn = conn

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable | None = None
                          ) -> httpcore.AsyncNetworkStream:
        import asyncio

        try:
            reader, writer = await asyncio.wait_for(self.conn.open_connection(host, port),
                                                    timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"{host}:{port}: no answer within {timeout}s") \
                from None
        except asyncssh.ChannelOpenError as err:
            raise httpcore.ConnectError(f"{host}:{port}: {err.reason}") from None
        except (asyncssh.Error, OSError) as err:
            raise httpcore.ConnectError(f"{host}:{port}: {err}") from None
        return _ChannelStream(reader, writer)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not forwarded")

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


def ssh_transport(conn: asyncssh.SSHClientConnection) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport()
    # httpx builds its httpcore pool in __init__; give it one that dials over SSH
    transport._pool = httpcore.AsyncConnectionPool(network_backend=SSHNetworkBackend(conn))
    return transport


async def http_client(api, name: str, **kw) -> httpx.AsyncClient:
    link = await api.connection(name)
    return httpx.AsyncClient(transport=ssh_transport(link.conn), **kw)


@dataclass(frozen=True)
class HttpTarget:
    port: int
    path: str = "/"


def parse_http(text: str) -> HttpTarget:
    port, _, path = text.partition("/")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadInput(f"--http {text!r}: use PORT[/PATH], e.g. 8080/healthz")
    return HttpTarget(int(port), "/" + path)


async def check_http(api, name: str, target: HttpTarget, *, host: str = "127.0.0.1",
                     timeout: float = 10.0) -> dict:
    """GET http://HOST:PORT/PATH from the node; a record with status and latency."""
    node = await api.engine.node(name)
    route = api.route(node)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{target.port}{target.path}"
    rec = {"node": name, "url": url, "route": route.kind.value, "via": None, "ok": False,
           "status": None, "latency_ms": None, "connect_ms": None, "bytes": None,
           "error": None}
    t0 = time.monotonic()
    try:
        link = await api.connection(name)
    except Exception as err:  # AccessError and friends: report, don't crash
        rec["error"] = f"{getattr(err, 'kind', 'unreachable')}: {err}"
        return rec
    rec["via"] = link.via
    rec["connect_ms"] = round((time.monotonic() - t0) * 1000, 1)
    t1 = time.monotonic()
    try:
        async with httpx.AsyncClient(transport=ssh_transport(link.conn),
                                     timeout=timeout) as client:
            resp = await client.get(url)
        rec["latency_ms"] = round((time.monotonic() - t1) * 1000, 1)
        rec["status"] = resp.status_code
        rec["bytes"] = len(resp.content)
        rec["ok"] = resp.status_code < 400
    except httpx.HTTPError as err:
        rec["latency_ms"] = round((time.monotonic() - t1) * 1000, 1)
        rec["error"] = f"{type(err).__name__}: {err}"
    return rec
