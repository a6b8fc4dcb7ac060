"""An SSH lab of asyncssh servers in the test's own process, on loopback (no root).

Jumps j1 127.0.0.2 and j2 127.0.0.3 forward direct-tcpip from their own
address; nodes on 127.0.0.x accept connections only from a jump's address
(unless `from_anyone`, like a beachhead) and allow direct-tcpip themselves. A
node runs exec commands as real shell processes (each its own process group,
the channel's stdin as their stdin, like sshd) and answers a PTY shell request
with a tiny line shell. One server class per role with knobs for the
misbehaviour a test wants, as asyncssh's own tests/server.py does it:

- a jump never answers a channel open to `BLACKHOLE` (a firewalled node);
- `SshLab.login_noise`: stderr a login script writes before each command;
- `start_node(authorized=...)`: a node that refuses the lab's client key;
- `kill(name)`: a host dying (listener closed, connections dropped).

It also counts what the pool's limits are about: unauthenticated connections
per node (`preauth`), authentications in progress (`auth_max`), sessions per
node (`sessions_max`), and records the shell's terminal sizes and keystrokes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import asyncssh
from asyncssh.forward import SSHForwarder

from support.profiles import dump_profile, merged, profile_data

JUMP_ADDRS = {"j1": "127.0.0.2", "j2": "127.0.0.3"}
BLACKHOLE = "127.0.0.66"


def write_key(path: Path, key: asyncssh.SSHKey) -> Path:
    path.write_bytes(key.export_private_key())
    os.chmod(path, 0o600)
    return path


class Server:
    """One listening jump or node."""

    def __init__(self, name, address, port, host_key, listener, conns, *, jump: bool):
        self.name, self.address, self.port = name, address, port
        self.host_key, self.listener, self.conns = host_key, listener, conns
        self.jump = jump

    def known_hosts_line(self) -> str:
        pub = self.host_key.export_public_key().decode().split()[:2]
        return f"[{self.address}]:{self.port} {' '.join(pub)}"

    async def kill(self) -> None:
        """Stop listening and drop every connection, as a dying host would."""
        self.listener.close()
        for c in list(self.conns):
            c.abort()
        await self.listener.wait_closed()


class SshLab:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_path = write_key(tmp / "id_ed25519", self.client_key)
        self.authorized = asyncssh.import_authorized_keys(
            self.client_key.export_public_key().decode())
        self.servers: dict[str, Server] = {}
        self.host_keys: dict[str, asyncssh.SSHKey] = {}
        self.preauth: dict[str, dict] = {}
        self.auth_now = 0
        self.auth_max = 0
        self.procs: list = []
        self.sessions_max: dict[str, int] = {}
        self.login_noise = ""  # stderr a login script writes before the command runs
        self.sizes: dict[str, list] = {}  # terminal sizes a node's shell saw, in order
        self.typed: dict[str, bytes] = {}  # what reached a node's shell

    def host_key(self, name):
        return self.host_keys.setdefault(name, asyncssh.generate_private_key("ssh-ed25519"))

    async def start_jump(self, name: str = "j1", port: int = 0) -> Server:
        addr = JUMP_ADDRS[name]
        conns: list = []
        loop = asyncio.get_running_loop()

        async def forward(host, dport):
            if host == BLACKHOLE:
                await asyncio.sleep(3600)  # a dropped SYN: the jump never hears back
            try:
                _, peer = await loop.create_connection(SSHForwarder, host, dport,
                                                       local_addr=(addr, 0))
            except OSError as exc:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc))
            return SSHForwarder(peer)

        class JumpServer(asyncssh.SSHServer):
            def connection_made(self, conn):
                conns.append(conn)

            def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
                return forward(dest_host, dest_port)

        listener = await asyncssh.listen(addr, port, server_host_keys=[self.host_key(name)],
                                         authorized_client_keys=self.authorized,
                                         server_factory=JumpServer)
        port = listener.sockets[0].getsockname()[1]
        s = self.servers[name] = Server(name, addr, port, self.host_key(name), listener, conns,
                                        jump=True)
        return s

    async def start_node(self, name: str, address: str, *, port: int = 0,
                         from_anyone: bool = False, authorized=None, host_key=None) -> Server:
        lab = self
        conns: list = []
        allowed = None if from_anyone else set(JUMP_ADDRS.values())
        sessions = {"now": 0}

        counts = self.preauth.setdefault(name, {"now": 0, "max": 0})

        class NodeServer(asyncssh.SSHServer):
            """Counts connections not yet authenticated (what MaxStartups counts) per
            server, and authentications in progress across the lab."""

            def connection_made(self, conn):
                self.conn = conn
                self.preauth = self.authing = False
                conns.append(conn)
                peer = conn.get_extra_info("peername")[0]
                if allowed is not None and peer not in allowed:
                    asyncio.get_running_loop().call_soon(conn.abort)
                    return
                counts["now"] += 1
                counts["max"] = max(counts["max"], counts["now"])
                self.preauth = True

            def begin_auth(self, username):
                lab.auth_now += 1
                lab.auth_max = max(lab.auth_max, lab.auth_now)
                self.authing = True
                return True

            def _done(self):
                if self.preauth:
                    counts["now"] -= 1
                    self.preauth = False
                if self.authing:
                    lab.auth_now -= 1
                    self.authing = False

            def connection_lost(self, exc):
                self._done()

            def auth_completed(self):
                self._done()

            def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
                return True  # asyncssh connects to dest itself (like AllowTcpForwarding)

        async def session(p: asyncssh.SSHServerProcess):
            if p.command is None:
                await shell(p)
                return
            sessions["now"] += 1
            lab.sessions_max[name] = max(lab.sessions_max.get(name, 0), sessions["now"])
            try:
                await run(p)
            finally:
                sessions["now"] -= 1

        async def run(p: asyncssh.SSHServerProcess):
            cmd = p.command or ""
            if cmd.strip().splitlines()[-1:] == ["hostname"]:  # guarded or not
                p.stdout.write(name + "\n")
                p.exit(0)
                return
            if lab.login_noise:  # like a ~/.bashrc that writes to stderr
                p.stderr.write(lab.login_noise)
            # like sshd: the session is its own process group (led by the
            # shell: fleet's guard reports its pid) and the channel's stdin is
            # the command's stdin
            proc = await asyncio.create_subprocess_shell(
                cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=dict(os.environ, NODE=name),
                start_new_session=True)
            lab.procs.append(proc)

            async def feed():
                try:
                    while data := await p.stdin.read(4096):
                        proc.stdin.write(data.encode())
                except Exception:  # the channel went away
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        proc.stdin.close()

            async def relay(source, sink):  # as it comes, like sshd
                while data := await source.read(4096):
                    sink.write(data.decode())

            feeder = asyncio.ensure_future(feed())
            try:
                await asyncio.gather(relay(proc.stdout, p.stdout),
                                     relay(proc.stderr, p.stderr))
                await proc.wait()
            except asyncio.CancelledError:
                proc.kill()
                raise
            finally:
                feeder.cancel()
            p.exit(proc.returncode)

        async def shell(p: asyncssh.SSHServerProcess):
            """A tiny line shell on a PTY: `size`, `term`, `exit N`, else echo."""
            lab.sizes[name] = [p.get_terminal_size()[:2]]
            p.stdout.write(f"welcome to {name}\r\n$ ")
            line = ""
            while True:
                try:
                    data = await p.stdin.read(1)
                except asyncssh.TerminalSizeChanged as ch:
                    lab.sizes[name].append((ch.width, ch.height))
                    continue
                if not data:
                    p.exit(0)
                    return
                lab.typed[name] = lab.typed.get(name, b"") + data.encode()
                if data not in "\r\n":
                    line += data
                    p.stdout.write(data)  # the pty echoes
                    continue
                cmd, line = line.strip(), ""
                p.stdout.write("\r\n")
                if cmd.startswith("exit"):
                    p.exit(int(cmd.split()[1]) if " " in cmd else 0)
                    return
                if cmd == "size":
                    w, h = p.get_terminal_size()[:2]
                    p.stdout.write(f"{h} {w}\r\n")
                elif cmd == "term":
                    p.stdout.write(f"{p.get_terminal_type()}\r\n")
                elif cmd == "secret":
                    p.stdout.write("Password: ")
                    continue
                else:
                    p.stdout.write(f"{cmd}\r\n")
                p.stdout.write("$ ")

        key = host_key or self.host_key(name)
        listener = await asyncssh.listen(
            address, port, server_host_keys=[key],
            authorized_client_keys=authorized or self.authorized,
            server_factory=NodeServer, process_factory=session, sftp_factory=True,
            encoding="utf-8", line_editor=False)
        port = listener.sockets[0].getsockname()[1]
        s = self.servers[name] = Server(name, address, port, key, listener, conns, jump=False)
        return s

    async def kill(self, name: str) -> None:
        await self.servers[name].kill()

    def write_known_hosts(self, path: Path, skip=()) -> Path:
        path.write_text("".join(s.known_hosts_line() + "\n"
                                for n, s in self.servers.items() if n not in skip))
        return path

    def profile_data(self, overrides: dict | None = None) -> dict:
        """profiles/ssh_lab.yaml with the lab's key, its running jumps and its nodes
        (in site `lo`), `overrides` merged over it."""
        lab = {"operator": {"ssh": {"identity": str(self.client_key_path)}},
               "jumps": [{"name": n, "address": s.address, "port": s.port}
                         for n, s in self.servers.items() if s.jump],
               "nodes": [{"name": n, "site": "lo", "address": s.address, "port": s.port}
                         for n, s in self.servers.items() if not s.jump]}
        return merged(merged(profile_data("ssh_lab"), lab), overrides or {})

    def write_profile(self, overrides: dict | None = None) -> Path:
        """<tmp>/lab.yaml from profile_data(overrides)."""
        return dump_profile(self.tmp / "lab.yaml", self.profile_data(overrides))

    async def close(self):
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        for s in self.servers.values():
            s.listener.close()
            for c in s.conns:
                c.abort()
