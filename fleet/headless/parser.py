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
  3  environment: missing tool, port in use, no permission, a command not in this build
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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
                     "events as JSON lines on stdout")
    command("info", "every path in use: profile, config, data, store, logs, cache")

    p = command("profile", "profile tools")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    check = psub.add_parser("check", help="validate a profile; errors as FILE:LINE: key: message",
                            description="validate a profile; errors as FILE:LINE: key: message")
    check.add_argument("file", metavar="FILE")

    p = command("machines", "the machines seen: MAC, vendor, arch, state, first/last seen")
    p.add_argument("--state", metavar="S",
                   help="only machines in this state (discovered, leased, provisioning, "
                        "provisioned, wiping, failed, stalled)")

    p = command("lease", "lease a discovered machine to a deployment; its next boot installs")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--deployment", "-d", required=True, metavar="D")
    p.add_argument("--hostname", metavar="H", help="default: node-<last 6 hex digits of MAC>")
    p.add_argument("--address", metavar="A", help="IPv4 address for the installed node")

    p = command("release", "end a machine's lease; it returns to the pool")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("--wipe", action="store_true",
                   help="its next boot clears the boot sector before it returns to the pool")

    p = command("nodes", "registered and declared nodes, with their route")
    p.add_argument("--select", metavar="EXPR",
                   help="all | site=NAME | LABEL=VALUE | name=GLOB, comma-separated; !negates")

    p = command("routes", "how each node would be reached, and why")
    p.add_argument("nodes", nargs="*", metavar="NODE")

    p = command("exec", "run a command on nodes, in parallel, through their routes")
    p.add_argument("--select", metavar="EXPR")
    p.add_argument("--parallel", type=int, default=32, metavar="N")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S")
    p.add_argument("targets", nargs="*", metavar="NODE",
                   help="node names; the command follows after --")

    p = command("shell", "an interactive shell on a node in this terminal")
    p.add_argument("node", metavar="NODE")

    p = command("forward", "forward a local port to a node's port through its route")
    p.add_argument("node", metavar="NODE")
    p.add_argument("ports", metavar="LOCAL:REMOTE")

    p = command("build", "build boot media as a tracked job")
    p.add_argument("what", choices=["ipxe", "grub", "syslinux", "iso"])
    p.add_argument("options", nargs=argparse.REMAINDER)

    command("artifacts", "built artifacts: id, kind, path, sha256")
    command("jobs", "jobs: builds and fan-out commands, with state and progress")
    p = command("job", "one job: cancel it or read its log")
    jsub = p.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    for action in ("cancel", "log", "retry"):
        a = jsub.add_parser(action, help=f"{action} a job", description=f"{action} a job")
        a.add_argument("id", type=int, metavar="ID")

    p = command("events", "the event log: every state change")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events (from any process) until interrupted")
    p.add_argument("--limit", "-n", type=int, default=50, metavar="N",
                   help="how many past events to show first (default 50)")
    p.add_argument("--subject", metavar="S", help="only events about this MAC/node/job")

    command("distributors", "the boot service instances, one per site network")
    p = command("distributor", "switch a distributor's boot services on or off")
    p.add_argument("switch", choices=["on", "off"])
    p.add_argument("name", metavar="NAME")
    return parser
