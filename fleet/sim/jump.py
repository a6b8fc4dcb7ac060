"""The demo site's jump host: an asyncssh server that forwards to the site's nodes.

It authenticates the operator's key, allows direct-tcpip only into the site's
subnets, and opens those TCP connections *from its own address* (the nodes
accept nothing else, so the route planner's choice of the jump is what makes
a node reachable). Port 22 on the demo network maps to the nodes' unprivileged
sshd port (`node.SSH_PORT`), like a DNAT on a real jump.

No shells and no commands: `ssh -J` style forwarding only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import asyncssh
from asyncssh.forward import SSHForwarder

from fleet.sim.node import SSH_PORT, close_listener

log = logging.getLogger(__name__)


class _ChannelSide(SSHForwarder):
    """The channel end of a forward. The node speaks first (its SSH banner), and
    that can arrive before the channel is open (before `session_started`): keep
    it until then instead of writing into a channel the client has not seen
    confirmed yet."""

    def __init__(self):
        super().__init__()
        self._early: list[bytes] | None = []
        self._early_eof = False

    def write(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
        else:
            super().write(data)

    def write_eof(self) -> None:
        if self._early is not None:
            self._early_eof = True
        else:
            super().write_eof()

    def session_started(self) -> None:
        early, self._early = self._early or [], None
        for data in early:
            super().write(data)
        if self._early_eof:
            super().write_eof()


class _JumpServer(asyncssh.SSHServer):
    def __init__(self, jump: "JumpServer"):
        self.jump = jump

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int):
        try:
            addr = ipaddress.IPv4Address(dest_host)
        except ValueError:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            f"{dest_host}: not an address on this network")
        if not any(addr in net for net in self.jump.subnets):
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"{dest_host} is not on this jump's networks")
        port = SSH_PORT if dest_port == 22 else dest_port
        return self.jump.forward(str(addr), port)


class JumpServer:
    def __init__(self, address: str, port: int, host_key: asyncssh.SSHKey,
                 authorized_keys: list[str], subnets):
        self.address = address
        self.port = port
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.subnets = tuple(ipaddress.IPv4Network(n) for n in subnets)
        self.forwards = 0
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        keys = asyncssh.import_authorized_keys("\n".join(self.authorized_keys) + "\n")
        self._server = await asyncssh.listen(
            self.address, self.port, server_factory=lambda: _JumpServer(self),
            server_host_keys=[self.host_key], authorized_client_keys=keys,
            reuse_address=True, keepalive_interval=0, login_timeout=15,
            allow_scp=False)

    async def stop(self) -> None:
        server, self._server = self._server, None
        await close_listener(server)

    async def forward(self, host: str, port: int) -> SSHForwarder:
        loop = asyncio.get_running_loop()
        channel_side = _ChannelSide()
        try:
            # the TCP side is linked to the channel side before the first byte
            await asyncio.wait_for(loop.create_connection(
                lambda: SSHForwarder(channel_side), host, port,
                local_addr=(self.address, 0)), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "Connection timed out" if isinstance(exc, asyncio.TimeoutError) \
                else (exc.strerror or str(exc))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            f"{host}:{port}: {reason}") from None
        self.forwards += 1
        return channel_side
