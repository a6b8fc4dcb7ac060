"""The headless command line: every command of the contract, with --help each.

    fleet --headless [--profile NAME|PATH] [--format table|json|jsonl] COMMAND ...

Global options may also follow the command (`fleet --headless machines --format json`).
"""

from __future__ import annotations

import argparse

from fleet.headless.output import FORMATS

EXIT_CODES = """exit codes:
  0  ok
  1  some targets failed (exec, checks)
  2  bad input: usage, profile errors (FILE:LINE: key: message), unknown MAC/node/job
  3  environment: missing tool, port in use, no permission, missing interface
"""

PROFILE_HELP = ("profile name (e.g. 'demo', looked up in the config dir's profiles/ and "
                "the bundled profiles/) or a path to a profile YAML file; default: "
                "$FLEET_PROFILE, else 'demo'")


def _globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--profile", "-p", metavar="NAME|PATH", default=default,
                        help=PROFILE_HELP)
    parser.add_argument("--format", "-o", choices=FORMATS, default=default,
                        help="output format (default: table)")
    parser.add_argument("--read-only", action="store_true", default=default,
                        help="refuse every change (lease, release, switches)")
    parser.add_argument("--theme", metavar="NAME", default=default, help=argparse.SUPPRESS)
    parser.add_argument("--no-control", action="store_true", default=default,
                        help="run in this process even when a running fleet (console or "
                             "serve) on this profile could run it (also: FLEET_NO_CONTROL=1)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def job_ref(text: str) -> tuple[str | None, int]:
    """`5` (a job here) or `west:5` (job 5 of remote site west)."""
    site, _, number = text.rpartition(":")
    try:
        job = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (N or SITE:N)") from None
    if job < 1 or (":" in text and not site):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (N or SITE:N)")
    return (site or None, job)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                 ) -> argparse.ArgumentParser:
    """`parser_class`: the control server's, which prints usage and errors to
    its client instead of exiting (its subcommands' parsers are of it too)."""
    parser = parser_class(
        prog="fleet --headless", formatter_class=_Formatter,
        description="fleet for scripts: the same engine as the console, with "
                    "machine-readable output (--format json|jsonl) and exit codes.",
        epilog=EXIT_CODES)
    _globals(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, **kw) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter,
                           epilog=EXIT_CODES, **kw)
        _globals(p, top=False)
        return p

    command("serve", "run the boot services and the job runner until SIGINT/SIGTERM; "
                     "events as JSON lines on stdout").add_argument(
        "--site", metavar="NAME", help="serve this site only, as its own host does (default: "
                                       "every site of the profile without an agent: block)")
    command("agent", "serve this site to a console over SSH: JSON-lines requests on stdin, "
                     "replies and event streams on stdout, until end of input").add_argument(
        "--site", metavar="NAME", help="the site served (default: the profile's only site)")
    p = command("site", "the sites: where each runs, and whether the console reaches it")
    ssub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    status = ssub.add_parser(
        "status", help="every site: where it runs, connected, agent version, cursor lag, last "
                       "heard", formatter_class=_Formatter, epilog=EXIT_CODES,
        description="every site of the profile: local ones, and remote ones reached over SSH "
                    "(their agent:\nblock) and synced into the console's replica; a site "
                    "that cannot be reached is\nshown away, with why and since when, and "
                    "its last known state. exit 1 if any is away")
    _globals(status, top=False)
    inst = ssub.add_parser(
        "install", help="put this fleet version on a remote site's agent host over SSH",
        formatter_class=_Formatter, epilog=EXIT_CODES,
        description="put this console's fleet version on SITE's agent host (its agent: "
                    "block), over the\nsame SSH route the console uses: wheels built here "
                    "(the host needs no package index)\ncopied over SFTP, a venv there, "
                    "this profile copied to ~/.config/fleet/profiles/NAME.yaml\non the "
                    "host, and a systemd unit that runs fleet's serve for SITE there\n(started when "
                    "systemd runs). The same version "
                    "already there: nothing is\nreinstalled.")
    inst.add_argument("site", metavar="SITE")
    inst.add_argument("--venv", metavar="PATH",
                      help="the venv on the host (default: the one the agent command's "
                           "bin/fleet is in, else ~/.local/share/fleet/venv)")
    inst.add_argument("--wheels", metavar="DIR",
                      help="install these wheels (fleet's and its dependencies') instead of "
                           "building them into the cache dir")
    inst.add_argument("--profile-path", metavar="P",
                      help="a profile file already on the host, used instead of copying "
                           "this one")
    inst.add_argument("--no-unit", action="store_true", help="write no systemd unit")
    _globals(inst, top=False)
    command("info", "every path in use: profile, config, data, store, logs, cache")

    p = command("profile", "profile tools")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    check = psub.add_parser("check", help="validate a profile; errors as FILE:LINE: key: message",
                            description="validate a profile; errors as FILE:LINE: key: message")
    check.add_argument("file", metavar="FILE|NAME",
                       help="a profile file, or a name looked up as --profile does")
    new = psub.add_parser(
        "new", help="write a starter profile NAME into the config dir's profiles/",
        description="write a starter profile into ~/.config/fleet/profiles/NAME.yaml, with "
                    "the templates it uses in profiles/templates/ (existing templates are "
                    "kept); refuses to overwrite a profile (exit 2)",
        epilog="then: edit it, `fleet --headless profile check NAME`, `fleet --profile NAME`")
    new.add_argument("name", metavar="NAME")
    new.add_argument("--from", dest="source", choices=["lab", "demo"], default="lab",
                     help="lab: the documented real-site example (default); demo: a copy "
                          "of the demo to edit (as NAME demo it replaces the bundled one)")
    for action in (check, new):
        _globals(action, top=False)

    p = command("machines", "the machines seen: MAC, vendor, arch, state, first/last seen")
    p.add_argument("--state", metavar="S",
                   help="only machines in this state (discovered, leased, provisioning, "
                        "provisioned, wiping, failed, stalled)")

    p = command("lease", "lease a discovered machine to a deployment; its next boot installs")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--deployment", "-d", required=True, metavar="D")
    p.add_argument("--hostname", metavar="H", help="default: node-<last 6 hex digits of MAC>")
    p.add_argument("--address", metavar="A", help="IPv4 address for the installed node")

    p = command("release", "end a machine's lease and retire its node; it returns to the pool")
    p.description = ("end a machine's lease and retire its node (it leaves `nodes`, its "
                     "pinned host keys are dropped);\nthe machine returns to the pool. A "
                     "machine holding no lease: nothing changes (exit 0);\na plain release "
                     "of a machine waiting to be wiped cancels the wipe.")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--wipe", action="store_true",
                   help="its next boot clears the boot sector before it returns to the pool "
                        "(also for a machine holding no lease: a deliberate wipe)")

    p = command("nodes", "registered and declared nodes, with their route")
    p.add_argument("--select", metavar="EXPR",
                   help="all | site=NAME | LABEL=VALUE | name=GLOB, comma-separated; !negates")

    p = command("trust", "pinned SSH host keys: list them, or forget a node's or jump's")
    tsub = p.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    a = tsub.add_parser("list", help="every pinned host key: node or jump, type, fingerprint",
                        description="every pinned host key: node or jump, type, fingerprint, "
                                    "where it came from")
    _globals(a, top=False)
    a = tsub.add_parser("forget", help="drop the host keys pinned for a node or jump",
                        description="drop the host keys pinned for a node or jump (after a "
                                    "reinstall): the next connection trusts known_hosts, or "
                                    "pins anew under host_keys: accept-new or at call-home")
    a.add_argument("name", metavar="NODE")
    _globals(a, top=False)

    p = command("routes", "how each node would be reached, and why")
    p.description = ("how each node would be reached, and why: direct-public-ipv4, "
                     "direct-ipv6,\ndirect-beachhead, jump (with the failover jumps) or "
                     "unreachable; never a guess")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="default: every node")

    p = command("exec", "run a command on nodes, in parallel, through their routes")
    p.description = ("run a command on nodes, in parallel, through their routes\n\n"
                     "table: output lines as 'NODE | line' (stderr 'NODE ! line'), the "
                     "failed nodes, a summary\n"
                     "jsonl: {type: output, node, stream, line} lines, then one\n"
                     "  {type: result, node, exit_status, duration_s, error_kind, error, "
                     "route, via, attempts}\n"
                     "  per node, then {type: summary, ...}\n"
                     "error_kind: ok | command-failed | timeout | unreachable | auth | "
                     "host-key | cancelled\n"
                     "exit 1 if any node failed. Recorded as a job (`fleet --headless jobs`),\n"
                     "with exec.started/exec.finished and one ssh.command event per node;\n"
                     "`fleet --headless job cancel ID` from anywhere stops it (the remote "
                     "commands too).\n"
                     "example: exec --select role=web -- uptime")
    p.add_argument("--select", metavar="EXPR",
                   help="all | site=NAME | LABEL=VALUE | name=GLOB, comma-separated; !negates")
    p.add_argument("--parallel", type=int, default=32, metavar="N",
                   help="nodes at once (default 32)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="per-node limit on the command's run time (default 60); connecting "
                        "is bounded by the profile's connect_timeout")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="retry a node whose connection was lost (its jump went down) N times, "
                        "through the next jump (default 1); commands should be idempotent")
    p.add_argument("--script", metavar="FILE",
                   help="upload FILE over SFTP, run it (arguments after --), then remove it")
    p.add_argument("targets", nargs="*", metavar="NODE",
                   help="node names; the command follows after --")

    p = command("shell", "an interactive shell on a node in this terminal")
    p.description = ("an interactive shell on a node in this terminal, over its route on a "
                     "pooled connection\n\n"
                     "The terminal is raw while the shell runs and restored after; window "
                     "size changes follow;\n$TERM is passed. The session's output (never "
                     "its input) is recorded as asciicast v2\nunder the recordings dir "
                     "(`fleet --headless info`); events shell.opened/shell.closed.\n"
                     "exit status: the remote shell's (255 if the connection was lost)")
    p.add_argument("node", metavar="NODE")

    p = command("forward", "forward a local port to a node's port through its route")
    p.description = ("forward a local port to a port on (or reachable from) a node, through "
                     "its route, until SIGINT\n\n"
                     "[BIND:]LOCAL:[HOST:]REMOTE: listen on BIND:LOCAL (default 127.0.0.1; "
                     "LOCAL 0 = any free port);\neach connection becomes a direct-tcpip "
                     "channel on the node's pooled connection, so the\nnode's sshd connects "
                     "to HOST:REMOTE (default HOST 127.0.0.1: the node's own loopback).\n"
                     "Prints the listening address first (json/jsonl: a record with "
                     "listen_host, listen_port).\nexamples: forward web1 8080:80   "
                     "forward web1 0.0.0.0:8443:10.91.0.12:443")
    p.add_argument("node", metavar="NODE")
    p.add_argument("ports", metavar="[BIND:]LOCAL:[HOST:]REMOTE")

    p = command("check", "check a node over its route: SSH answers, or an HTTP GET")
    p.description = ("check a node over its route\n\n"
                     "without --http: an SSH keepalive round trip to the node's sshd "
                     "(connecting first)\n"
                     "--http PORT[/PATH]: GET http://HOST:PORT/PATH from the node, with "
                     "httpx over an SSH\n  direct-tcpip channel (HOST: --http-host, "
                     "default 127.0.0.1, the node's loopback)\n"
                     "record: node, url, status, latency_ms, connect_ms, bytes, via, ok, "
                     "error\nexit 1 if it failed (no answer, HTTP status >= 400)")
    p.add_argument("node", metavar="NODE")
    p.add_argument("--http", metavar="PORT[/PATH]", help="HTTP GET through the route")
    p.add_argument("--http-host", default="127.0.0.1", metavar="HOST",
                   help="where the node connects for --http (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="HTTP timeout (default 10)")

    p = command("link", "link check between two nodes: ping RTT, and iperf3 throughput")
    p.description = ("link check from NODE_A to NODE_B: `ping -c N -q <B>` on A; with "
                     "--iperf, `iperf3 -s -1` on B\nand `iperf3 -c` on A when both have "
                     "iperf3 (else iperf_skipped says who lacks it)\n"
                     "one record: a, b, address, ok, ping{transmitted, received, loss_pct, "
                     "rtt_*_ms}, iperf{sent_bps,\nreceived_bps, retransmits} | null, "
                     "iperf_skipped, error, duration_s; event link.checked\n"
                     "exit 1 if no ping reply came back or iperf3 failed")
    p.add_argument("a", metavar="NODE_A")
    p.add_argument("b", metavar="NODE_B")
    p.add_argument("--iperf", action="store_true", help="also measure throughput with iperf3")
    p.add_argument("--count", type=int, default=5, metavar="N", help="pings (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, metavar="S",
                   help="iperf3 duration (default 3)")
    p.add_argument("--port", type=int, default=5201, metavar="P",
                   help="iperf3 port on NODE_B (default 5201)")

    p = command("build", "build boot media as a tracked job; prints the artifact's id, path "
                         "and sha256 (identical inputs: the cached artifact, at once)")
    p.add_argument("what", choices=["ipxe", "grub", "syslinux", "iso", "wiper"])
    p.add_argument("--label", metavar="L", help="ISO volume label (default FLEET)")
    p.add_argument("--distributor", metavar="NAME",
                   help="chain to this distributor's /boot/${mac}.ipxe and assign the "
                        "artifact to it (default chain target: the profile's first one)")
    p.add_argument("--script", metavar="FILE", help="iPXE script to embed instead of the "
                                                   "generated one")
    p.add_argument("--chain-url", metavar="URL",
                   help="http:// URL the generated script chains (${mac} is expanded by iPXE)")
    p.add_argument("--ipxe-dir", metavar="DIR",
                   help="folder of stock iPXE binaries (default: the ipxe package's)")
    p.add_argument("--ipxe-src", metavar="DIR",
                   help="iPXE source tree: compile with the script embedded (make EMBED=)")
    p.add_argument("--target", dest="ipxe_targets", action="append", metavar="T",
                   help="make target with --ipxe-src (default bin/undionly.kpxe; repeatable)")
    p.add_argument("--grub-cfg", metavar="FILE", help="grub.cfg for the grub build")
    p.add_argument("--wiper-root", metavar="DIR",
                   help="wiper: where a kernel package and busybox-static are installed or "
                        "unpacked with dpkg-deb -x (default /)")
    p.add_argument("--wiper-module", dest="wiper_modules", action="append", metavar="M",
                   help="wiper: a kernel module to load (repeatable; default: common disk "
                        "and NIC drivers)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the job and print the artifact (default); --no-wait "
                        "prints the job id and leaves the build to a background worker")

    command("artifacts", "built artifacts: id, kind, path, sha256")
    p = command("jobs", "jobs: builds and fan-out commands, with state and progress")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing jobs as their state, progress or phase change")
    p.add_argument("--state", metavar="S", action="append",
                   help="only jobs in this state (queued, running, succeeded, failed, "
                        "cancelled, interrupted; repeatable)")
    p.add_argument("--limit", "-n", type=int, default=100, metavar="N")
    p = command("job", "one job: cancel it, read its log, retry it")
    jsub = p.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    helps = {"cancel": "cancel a job: its processes are killed; state cancelled",
             "log": "a job's log lines",
             "retry": "a new job with the same inputs (linked to the old one)",
             "run": "run a queued job in this process (the --no-wait worker)"}
    for action in ("cancel", "log", "retry", "run"):
        a = jsub.add_parser(action, help=helps[action], description=helps[action])
        a.add_argument("id", type=job_ref, metavar="ID",
                       help="a job of this process's sites, or SITE:ID, a remote site's "
                            "(as the jobs command lists it)" if action in ("cancel", "retry") else None)
        _globals(a, top=False)
        if action == "log":
            a.add_argument("--follow", "-f", action="store_true",
                           help="keep printing lines until the job finishes")
        if action == "retry":
            a.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                           help="wait for the new job (default)")

    p = command("events", "the event log: every state change")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events (from any process) as JSON lines, "
                        "whatever --format says, until SIGINT/SIGTERM (exit 130)")
    p.add_argument("--limit", "-n", type=int, default=50, metavar="N",
                   help="how many past events to show first (default 50)")
    p.add_argument("--subject", metavar="S", help="only events about this MAC/node/job")

    command("distributors", "the boot service instances, one per site network")
    p = command("distributor", "switch a distributor's boot services on or off")
    p.add_argument("switch", choices=["on", "off"])
    p.add_argument("name", metavar="NAME")
    return parser
