"""A demo site's host: the sshd of the machine a remote site's agent runs on.

An asyncssh server on the site host's address that, like the demo's nodes,
accepts connections only from the jump's address (the console gets there
through the jump, as it would to a real site host) and only the operator's
key. Each exec request runs its command as a real child process, its
stdin/stdout/stderr wired to the SSH channel, so the console's
`fleet --headless agent --site NAME` is a real agent serving the site's store.

`fleet` is the one program on this host: it runs as this Python's
`-m fleet`, in the site's own environment (its XDG folders), on a leash to
this process (fleet.sim.leash). Anything else is `not found`, exit 127, as
a shell would say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
from typing import Mapping

import asyncssh

from fleet.sim.leash import command as leashed
from fleet.sim.node import close_listener

log = logging.getLogger(__name__)

#: how long a child gets to end after its channel closes, before SIGKILL
END_SECONDS = 2.0


class _HostServer(asyncssh.SSHServer):
    def __init__(self, host: "SiteHost"):
        self.host = host

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        if not peer or peer[0] not in self.host.allowed_peers:
            log.info("site host %s: refusing a connection from %s (not the jump)",
                     self.host.address, peer and peer[0])
            conn.close()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False


class SiteHost:
    def __init__(self, address: str, port: int, host_key: asyncssh.SSHKey,
                 authorized_keys: list[str], *, allowed_peers: tuple[str, ...],
                 env: Mapping[str, str], cwd: str):
        self.address = address
        self.port = port
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.allowed_peers = set(allowed_peers)
        self.env = dict(env)
        self.cwd = cwd
        self.children: set[asyncio.subprocess.Process] = set()
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        keys = asyncssh.import_authorized_keys("\n".join(self.authorized_keys) + "\n")
        self._server = await asyncssh.listen(
            self.address, self.port, server_factory=lambda: _HostServer(self),
            server_host_keys=[self.host_key], authorized_client_keys=keys,
            process_factory=self._session, encoding=None, reuse_address=True,
            keepalive_interval=0, login_timeout=15, allow_scp=False)

    async def stop(self) -> None:
        server, self._server = self._server, None
        await close_listener(server)
        await asyncio.gather(*(_end(child) for child in list(self.children)))

    def argv(self, command: str) -> list[str] | None:
        """What `command` runs here: `fleet ...` as this Python's fleet; else None."""
        try:
            words = shlex.split(command)
        except ValueError:
            return None
        if not words or words[0] != "fleet":
            return None
        return leashed(os.getpid(), [sys.executable, "-m", "fleet", *words[1:]])

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command
        argv = self.argv(command) if command is not None else None
        if argv is None:
            word = (command or "").split()[:1] or ["(no command)"]
            process.stderr.write(f"sh: {word[0]}: not found (this site host runs "
                                 "fleet only)\n".encode())
            process.exit(127)
            return
        child = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd)
        self.children.add(child)
        feed = asyncio.ensure_future(_copy_in(process.stdin, child.stdin))
        try:
            await asyncio.gather(_copy_out(child.stdout, process.stdout),
                                 _copy_out(child.stderr, process.stderr))
            status = await child.wait()
        except (asyncio.CancelledError, Exception):
            await _end(child)
            raise
        finally:
            feed.cancel()
            self.children.discard(child)
        with contextlib.suppress(Exception):
            process.exit(status if status >= 0 else 128 - status)


async def _copy_in(source: asyncssh.SSHReader, sink: asyncio.StreamWriter) -> None:
    """The channel's input into the child; its end of input closes the child's stdin."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (asyncssh.Error, ConnectionError, OSError):
        pass  # the channel or the child went: closing below ends the other
    finally:
        with contextlib.suppress(Exception):
            sink.close()


async def _copy_out(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
    while data := await source.read(65536):
        try:
            sink.write(data)
            await sink.drain()
        except (asyncssh.Error, ConnectionError, OSError, BrokenPipeError):
            return  # the channel is gone: the child ends when its stdin does


async def _end(child: asyncio.subprocess.Process) -> None:
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    try:
        await asyncio.wait_for(child.wait(), END_SECONDS)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
