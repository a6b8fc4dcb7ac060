"""An installed simulated machine's SSH server: a small, believable shell.

One asyncssh server per node, on the node's own loopback address. It accepts
only the keys its installer wrote to root's authorized_keys, and only
connections coming from the demo's jump address (a node on a private network
is not reachable from the operator's host directly; see `jump.py`). Port 22
needs root, so the demo network's sshd listens on `SSH_PORT` (2222) and the
jump maps port 22 to it.

Commands (`sh -c` style: `;`, `&&`, `||`, quotes; `$?`): hostname, uptime,
uname [-asnrmo], cat (/etc/os-release, /etc/hostname, /proc/loadavg,
/proc/uptime), ip addr|a|route, echo, printf (plain), true, false, exit N,
whoami, id, date, pwd, ls, sleep N, env, seq, pipes into head/tail/grep/wc,
stty size (the PTY's rows and columns, as the window changes),
top (full screen: draws with ANSI escapes on a PTY until `q`). Unknown commands: `sh: 1: X: not found`, 127.
A session with a PTY gets a prompt and line editing; `exit` ends it.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from dataclasses import dataclass, field

import asyncssh

log = logging.getLogger(__name__)

SSH_PORT = 2222

OS_RELEASE = {
    "debian12": ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                 'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\n'
                 'ID=debian\nHOME_URL="https://www.debian.org/"\n'
                 'SUPPORT_URL="https://www.debian.org/support"\n'
                 'BUG_REPORT_URL="https://bugs.debian.org/"\n',
                 "6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"),
    "rocky9": ('NAME="Rocky Linux"\nVERSION="9.3 (Blue Onyx)"\nID="rocky"\n'
               'ID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\nPLATFORM_ID="platform:el9"\n'
               'PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\nANSI_COLOR="0;32"\n'
               'HOME_URL="https://rockylinux.org/"\n',
               "5.14.0-362.8.1.el9_3.x86_64", "#1 SMP PREEMPT_DYNAMIC Wed Nov 8 17:36:32 UTC 2023"),
}


@dataclass
class NodeOS:
    """What the installer left on the disk."""

    hostname: str
    deployment: str
    host_key: asyncssh.SSHKey
    authorized_keys: list[str]
    arch: str = "x86_64"
    booted_at: float = field(default_factory=time.time)

    @property
    def release(self) -> tuple[str, str, str]:
        return OS_RELEASE.get(self.deployment, OS_RELEASE["debian12"])


async def close_listener(server: asyncssh.SSHAcceptor | None) -> None:
    """Stop accepting and wait (briefly) for the listener to close."""
    if server is None:
        return
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 2)
    except Exception:  # TimeoutError included: shutting down anyway
        pass


class _NodeServer(asyncssh.SSHServer):
    def __init__(self, node: "NodeServer"):
        self.node = node

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        if not peer or peer[0] not in self.node.allowed_peers:
            log.info("node %s: refusing a connection from %s (not the jump)",
                     self.node.os.hostname, peer and peer[0])
            conn.close()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False


class NodeServer:
    """The sshd of one simulated node (see the module docstring)."""

    def __init__(self, os_: NodeOS, address: str, *, allowed_peers: tuple[str, ...],
                 port: int = SSH_PORT, mac: str = ""):
        self.os = os_
        self.address = address
        self.port = port
        self.mac = mac
        self.allowed_peers = set(allowed_peers)
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        keys = asyncssh.import_authorized_keys("\n".join(self.os.authorized_keys) + "\n") \
            if self.os.authorized_keys else None
        self._server = await asyncssh.listen(
            self.address, self.port, server_factory=lambda: _NodeServer(self),
            server_host_keys=[self.os.host_key], authorized_client_keys=keys,
            process_factory=self._session, reuse_address=True,
            keepalive_interval=0, login_timeout=15)

    async def stop(self) -> None:
        server, self._server = self._server, None
        await close_listener(server)

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        shell = Shell(self, process)
        try:
            if process.command is not None:
                status = await shell.run_line(process.command)
            elif process.get_terminal_type():
                status = await shell.interactive()
            else:
                status = await shell.read_script()
            process.exit(status & 0xFF)
        except asyncssh.BreakReceived:
            process.exit(130)
        except (asyncssh.TerminalSizeChanged, asyncssh.SignalReceived):
            process.exit(130)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            process.close()


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


class Shell:
    """A tiny POSIX-ish shell over an asyncssh process."""

    def __init__(self, node: NodeServer, process: asyncssh.SSHServerProcess):
        self.node = node
        self.p = process
        self.status = 0
        self._capture: list[str] | None = None
        self._stdin: str | None = None  # what a pipe feeds the next command

    # -- modes ----------------------------------------------------------------------

    async def interactive(self) -> int:
        os_ = self.node.os
        self.out(f"Linux {os_.hostname} {os_.release[1]} {os_.release[2]} {os_.arch}\n\n"
                 "This is a simulated node of the fleet demo.\n")
        prompt = True
        while True:
            if prompt:
                self.out(f"root@{os_.hostname}:~# ")
            prompt = True
            try:
                line = await self.p.stdin.readline()
            except asyncssh.BreakReceived:
                continue
            except asyncssh.TerminalSizeChanged:
                prompt = False  # the window changed, not the line: no new prompt
                continue
            if not line:
                self.out("logout\n")
                return self.status
            try:
                await self.run_line(line.rstrip("\r\n"), raise_exit=True)
            except _Exit as e:
                self.out("logout\n")
                return e.status

    async def read_script(self) -> int:
        text = await self.p.stdin.read()
        for line in text.splitlines():
            try:
                await self.run_line(line, raise_exit=True)
            except _Exit as e:
                return e.status
        return self.status

    # -- running ----------------------------------------------------------------------

    def out(self, text: str) -> None:
        if self._capture is not None:
            self._capture.append(text)
            return
        if self.p.get_terminal_type():
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        self.p.stdout.write(text)

    def err(self, text: str) -> None:
        if self.p.get_terminal_type():
            text = text.replace("\n", "\r\n")
        self.p.stderr.write(text)

    async def run_line(self, line: str, raise_exit: bool = False) -> int:
        try:
            tokens = _split(line)
        except ValueError as e:
            self.err(f"sh: 1: Syntax error: {e}\n")
            self.status = 2
            return 2
        # sequences: a ; b && c || d
        op = ";"
        cmd: list[str] = []
        try:
            for tok in tokens + [";"]:
                if tok in (";", "&&", "||"):
                    if cmd:
                        run = (op == ";" or (op == "&&" and self.status == 0)
                               or (op == "||" and self.status != 0))
                        if run:
                            self.status = await self.run_pipeline(cmd)
                    cmd = []
                    op = tok
                else:
                    cmd.append(tok)
        except _Exit as e:
            if raise_exit:
                raise
            return e.status
        return self.status

    async def run_pipeline(self, words: list[str]) -> int:
        """`a | b | c`: each command's output is the next one's input."""
        stages: list[list[str]] = [[]]
        for w in words:
            if w == "|":
                stages.append([])
            else:
                stages[-1].append(w)
        if any(not st for st in stages):
            self.err("sh: 1: Syntax error: \"|\" unexpected\n")
            return 2
        data: str | None = None
        status = 0
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            self._stdin = data
            saved, self._capture = self._capture, (None if last else [])
            try:
                status = await self.run_command(argv)
            finally:
                captured, self._capture = self._capture, saved
                self._stdin = None
            data = "".join(captured) if captured is not None else None
        return status

    async def run_command(self, argv: list[str]) -> int:
        argv = [a.replace("$?", str(self.status)) for a in argv]
        name, args = argv[0], argv[1:]
        os_ = self.node.os
        if name == "exit":
            raise _Exit(int(args[0]) if args and args[0].lstrip("-").isdigit() else self.status)
        if name in ("true", ":"):
            return 0
        if name == "false":
            return 1
        if name == "echo":
            newline = True
            if args and args[0] == "-n":
                newline, args = False, args[1:]
            self.out(" ".join(args) + ("\n" if newline else ""))
            return 0
        if name == "printf":
            if args:
                self.out(args[0].replace("\\n", "\n").replace("%s", " ".join(args[1:])))
            return 0
        if name == "hostname":
            self.out(os_.hostname + "\n")
            return 0
        if name == "whoami":
            self.out("root\n")
            return 0
        if name == "id":
            self.out("uid=0(root) gid=0(root) groups=0(root)\n")
            return 0
        if name == "pwd":
            self.out("/root\n")
            return 0
        if name == "ls":
            self.out("" if not args or args[0] != "/" else
                     "bin  boot  dev  etc  home  lib  media  mnt  opt  proc  root  run  "
                     "sbin  srv  sys  tmp  usr  var\n")
            return 0
        if name == "date":
            self.out(time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime()) + "\n")
            return 0
        if name == "uptime":
            up = int(time.time() - os_.booted_at)
            minutes = max(0, up // 60)
            span = f"{minutes} min" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}"
            self.out(f" {time.strftime('%H:%M:%S', time.gmtime())} up {span},  1 user,  "
                     "load average: 0.08, 0.03, 0.01\n")
            return 0
        if name == "uname":
            return self._uname(args)
        if name == "cat":
            return self._cat(args)
        if name == "ip":
            return self._ip(args)
        if name == "sleep":
            try:
                await asyncio.sleep(min(float(args[0]), 3600.0))
            except (IndexError, ValueError):
                self.err("sleep: invalid time interval\n")
                return 1
            return 0
        if name == "seq":
            try:
                n = int(args[-1])
            except (IndexError, ValueError):
                return 1
            self.out("".join(f"{i}\n" for i in range(1, n + 1)))
            return 0
        if name == "env":
            self.out(f"HOME=/root\nUSER=root\nSHELL=/bin/sh\nHOSTNAME={os_.hostname}\n"
                     f"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
            return 0
        if name in ("head", "tail", "grep", "wc") and self._stdin is not None:
            return self._filter(name, args, self._stdin)
        if name == "top":
            return await self._top()
        if name == "stty":
            if not self.p.get_terminal_type():
                self.err("stty: 'standard input': Inappropriate ioctl for device\n")
                return 1
            if args == ["size"]:
                cols, rows = self.p.get_terminal_size()[:2]
                self.out(f"{rows} {cols}\n")
            return 0
        if name in ("sh", "bash") and len(args) >= 2 and args[0] == "-c":
            return await self.run_line(args[1])
        self.err(f"sh: 1: {name}: not found\n")
        return 127

    def _filter(self, name: str, args: list[str], text: str) -> int:
        lines = text.splitlines(keepends=True)
        if name in ("head", "tail"):
            n = 10
            for i, a in enumerate(args):
                if a == "-n" and i + 1 < len(args) and args[i + 1].isdigit():
                    n = int(args[i + 1])
                elif a.startswith("-") and a[1:].isdigit():
                    n = int(a[1:])
            self.out("".join(lines[:n] if name == "head" else lines[-n:] if n else []))
            return 0
        if name == "grep":
            pats = [a for a in args if not a.startswith("-")]
            if not pats:
                self.err("Usage: grep [OPTION]... PATTERNS [FILE]...\n")
                return 2
            invert, nocase = "-v" in args, "-i" in args
            pat = pats[0].lower() if nocase else pats[0]
            hits = [l for l in lines if (pat in (l.lower() if nocase else l)) != invert]
            self.out("".join(hits))
            return 0 if hits else 1
        # wc
        if "-l" in args:
            self.out(f"{len(lines)}\n")
        else:
            self.out(f"{len(lines):7d} {len(text.split()):7d} {len(text.encode()):7d}\n")
        return 0

    def _uname(self, args: list[str]) -> int:
        os_ = self.node.os
        flags = "".join(a.lstrip("-") for a in args) or "s"
        parts = {"s": "Linux", "n": os_.hostname, "r": os_.release[1], "v": os_.release[2],
                 "m": os_.arch, "o": "GNU/Linux"}
        if "a" in flags:
            flags = "snrvmo"
        bad = [c for c in flags if c not in parts]
        if bad:
            self.err(f"uname: invalid option -- '{bad[0]}'\n")
            return 1
        self.out(" ".join(parts[c] for c in "snrvmo" if c in flags) + "\n")
        return 0

    def _cat(self, args: list[str]) -> int:
        os_ = self.node.os
        files = {
            "/etc/os-release": os_.release[0],
            "/etc/hostname": os_.hostname + "\n",
            "/proc/loadavg": "0.08 0.03 0.01 1/123 4567\n",
            "/proc/uptime": f"{time.time() - os_.booted_at:.2f} 0.00\n",
        }
        status = 0
        for a in args:
            if a in files:
                self.out(files[a])
            else:
                self.err(f"cat: {a}: No such file or directory\n")
                status = 1
        return status

    def _ip(self, args: list[str]) -> int:
        what = args[0] if args else ""
        node = self.node
        mac = node.mac or "52:54:00:00:00:01"
        if what in ("a", "addr", "address"):
            self.out(
                "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n"
                "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
                "    inet 127.0.0.1/8 scope host lo\n"
                "2: eno1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP\n"
                f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n"
                f"    inet {node.address}/16 brd 127.77.255.255 scope global dynamic eno1\n")
            return 0
        if what in ("r", "route"):
            self.out("default via 127.77.0.1 dev eno1\n"
                     "127.77.0.0/16 dev eno1 proto kernel scope link src "
                     f"{node.address}\n")
            return 0
        self.err('Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n')
        return 255

    async def _top(self) -> int:
        """A full-screen program: redraws until `q` (needs a PTY)."""
        if not self.p.get_terminal_type():
            self.err("top: failed tty get\n")
            return 1
        chan = self.p.channel
        chan.set_line_mode(False)
        os_ = self.node.os
        self.p.stdout.write("\x1b[?1049h\x1b[?25l")
        try:
            while True:
                cols, rows = self.p.get_terminal_size()[:2]
                cols, rows = cols or 80, rows or 24
                up = int(time.time() - os_.booted_at)
                lines = [f"top - {time.strftime('%H:%M:%S', time.gmtime())} up {up // 60} min,"
                         f"  1 user,  load average: 0.08, 0.03, 0.01",
                         "Tasks: 123 total,   1 running, 122 sleeping,   0 stopped",
                         "%Cpu(s):  0.7 us,  0.3 sy,  0.0 ni, 99.0 id",
                         f"{os_.hostname}  ({cols}x{rows})  press q to quit", "",
                         "    PID USER      PR  NI    VIRT    RES  %CPU  %MEM COMMAND"]
                for pid, cmd in ((1, "systemd"), (412, "sshd"), (530, "chronyd"),
                                 (611, "cron"), (1207, "top")):
                    lines.append(f"{pid:7d} root      20   0  {pid * 37 % 99999:6d}  "
                                 f"{pid * 13 % 9999:5d}   0.0   0.1 {cmd}")
                screen = "\x1b[H\x1b[2J" + "\r\n".join(l[:cols] for l in lines[:rows])
                self.p.stdout.write(screen)
                try:
                    async with asyncio.timeout(1.0):
                        data = await self.p.stdin.read(1)
                except TimeoutError:
                    continue
                except asyncssh.TerminalSizeChanged:
                    continue
                if data in ("q", "Q", "\x03", ""):
                    return 0
        finally:
            self.p.stdout.write("\x1b[?25h\x1b[?1049l")
            chan.set_line_mode(True)


def _split(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)
