"""The installed console as a person uses it: `fleet --profile demo` in a real
terminal (tmux), driven by keys, read back from the screen.

Lease a discovered machine through the lease form, wait for the node it becomes
(the demo installs it and it calls home), open a shell on it with `s`, run
`hostname`, read the answer off the screen, leave the shell, quit, and check the
terminal is given back as it was (main screen, cursor shown, mouse reporting off,
cooked tty modes). On the way: `c` copies the node's name with OSC 52 (tmux's
buffer receives it) and the events pane shows the lease's events.

The profile is the bundled demo.yaml with its ports, subnet and timings changed
(`write_demo_profile`): the bundled ports are fixed and another demo or test may
hold them. Also here: the wheel ships the bundled profiles, templates and themes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fleet.sim.profiles import free_ports, write_demo_profile
from support.profiles import isolated_env

ROOT = Path(__file__).resolve().parents[2]
FLEET = Path(sys.executable).parent / "fleet"  # the console script pip installed
PROMPT = "TMUX-TEST$ "
HOSTNAME = "tmuxnode"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux (scripts/test installs it)")


class Tmux:
    """One tmux server of our own (-L), one 160x50 session running a plain bash."""

    def __init__(self, socket: str, env: dict[str, str]):
        self.socket = socket
        self.env = env

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=20).stdout

    def start(self, cwd: Path) -> None:
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "160", "-y", "50",
                 "-c", str(cwd), "bash --norc --noprofile")
        self.run("set-option", "-s", "set-clipboard", "on")  # OSC 52 fills tmux's buffer
        self.keys(f"export PS1='{PROMPT}' TERM=xterm-256color", "Enter")
        self.wait_for(lambda s: s.rstrip().endswith(PROMPT.strip()), "the bash prompt", 10)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def text(self, text: str) -> None:
        self.run("send-keys", "-t", "t", "-l", text)  # literally, not as key names

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def display(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", "t", fmt).strip()

    def wait_for(self, check, what: str, timeout: float, every: float = 0.3):
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            found = check(screen)
            if found:
                return found
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path):
    env = isolated_env(tmp_path)  # a fresh store, config and keys under tmp_path
    env.pop("TMUX", None)
    env.pop("FLEET_THEME", None)
    env["TZ"] = "UTC"
    t = Tmux(f"fleet-test-{os.getpid()}-{tmp_path.name}", env)
    t.start(tmp_path)
    yield t
    t.kill()


def node_count(screen: str) -> int:
    m = re.search(r"(\d+) nodes", screen)
    return int(m.group(1)) if m else 0


def hostname_answer(screen: str) -> str | None:
    """The line after the `hostname` command, with any frame the in-app terminal
    draws around it stripped (the same either way: real terminal or a tab)."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"#\s*hostname\s*[│┃|]?\s*$", line) and i + 1 < len(lines):
            answer = lines[i + 1].strip(" │┃|\u2502")
            if answer:
                return answer
    return None


def cmdline_shows(text: str):
    """The command line (the screen's last-but-one line when open) holds `text`."""
    return lambda s: any(line.strip().startswith(text) for line in s.splitlines()[-3:])


def filter_nodes(tmux: Tmux, name: str) -> None:
    """`2` then `/name` Enter, as a person does it: looking at the screen between
    steps. Once (in CI, 1 run in about 10) the whole `2/name` burst left no trace on
    a loaded box; a person would press `/` again, and so does this, saying so."""
    for attempt in (1, 2):
        tmux.keys("2", "/")  # the nodes pane, its filter
        try:
            tmux.wait_for(cmdline_shows("/"), "the filter line to open", 8)
            break
        except AssertionError as err:
            if attempt == 2:
                raise
            print(f"filter line did not open on the first `/`: {err}")
            tmux.keys("Escape")
    tmux.text(name)
    tmux.wait_for(cmdline_shows("/" + name), f"/{name} on the filter line", 8)
    tmux.keys("Enter")
    tmux.wait_for(lambda s: re.search(rf"\[2\] Nodes \(1(/\d+)?\)  /{name}", s),
                  "the nodes filter", 10)


def test_installed_console_leases_opens_a_shell_and_restores_the_terminal(tmp_path, tmux):
    assert FLEET.exists(), f"{FLEET} missing: pip install -e . installs the console script"
    profile = write_demo_profile(tmp_path, name="demo", machines=3, misbehave=False,
                                 install_seconds=1, ports=free_ports(), subnet_octet=173,
                                 options={"stagger_seconds": 1, "ipxe_size": 4096})
    tmux.text(f"{FLEET} --profile {profile}; echo FLEET-EXIT=$?")
    tmux.keys("Enter")

    # the console is up and the demo's machines PXE booted into the hold loop
    tmux.wait_for(lambda s: "profile demo" in s and "Machines" in s, "the console", 30)
    assert tmux.display("#{alternate_on}") == "1"  # the app draws on the alternate screen
    tmux.wait_for(lambda s: s.count("discovered") >= 3, "3 discovered machines", 40)

    # lease the machine under the cursor with the form: deployment, hostname, address
    tmux.keys("1")
    tmux.keys("l")
    tmux.wait_for(lambda s: "Lease 1 machine" in s and "Deployment" in s, "the lease form", 10)
    time.sleep(0.5)  # a person reads the form first (its first field takes focus on mount)
    tmux.keys("Tab")  # deployment (the first, debian12) -> hostname
    time.sleep(0.3)
    tmux.text(HOSTNAME)
    tmux.wait_for(lambda s: HOSTNAME in s, "the hostname in the form", 5)
    tmux.keys("Tab")  # -> address: left empty (the demo machine keeps its own)
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "Lease 1 machine" not in s and "leased 1" in s,
                  "the lease to be done", 15)

    # the demo installs it; it calls home and shows up as a node
    tmux.wait_for(lambda s: node_count(s) >= 1, "the node to register", 60)
    filter_nodes(tmux, HOSTNAME)

    # `c` copies the node's name through the terminal (OSC 52), here into tmux's buffer
    tmux.keys("c")
    tmux.wait_for(lambda s: f"copied {HOSTNAME}" in s, "the copy notice", 10)
    assert tmux.run("show-buffer") == HOSTNAME

    # a shell on it: `s` (its sshd answers a moment after the call home: retry). A
    # failed attempt's tab says "enter closes this tab"; its notification lingers
    # for 10 s, so it is not a sign of the next attempt failing.
    deadline = time.monotonic() + 45
    while True:
        tmux.keys("s")
        screen = tmux.wait_for(
            lambda s: (f"root@{HOSTNAME}" in s or "closes this tab" in s) and s,
            "the shell", 20)
        if f"root@{HOSTNAME}" in screen:
            break
        assert time.monotonic() < deadline, screen
        tmux.keys("Enter")  # closes the failed tab: the dashboard again
        tmux.wait_for(lambda s: "closes this tab" not in s, "the failed tab to close", 10)
        time.sleep(2)
        tmux.keys("2")
        time.sleep(0.5)
    tmux.text("hostname")
    tmux.keys("Enter")
    answer = tmux.wait_for(hostname_answer, "the answer to hostname", 15)
    assert answer == HOSTNAME

    # leave the shell; the events pane tells the story of the lease
    tmux.text("exit")
    tmux.keys("Enter")
    time.sleep(1.0)
    if "closes this tab" in tmux.screen():
        tmux.keys("Enter")  # the in-app terminal's ended tab
        time.sleep(0.5)
    tmux.keys("5", "z")  # the events pane, zoomed
    tmux.wait_for(lambda s: "machine.leased" in s and "node.registered" in s,
                  "the lease's events", 10)
    tmux.keys("z")
    for _ in range(3):
        if "FLEET-EXIT=" in tmux.screen():
            break
        tmux.keys("C-q")
        try:
            tmux.wait_for(lambda s: "FLEET-EXIT=" in s, "fleet to quit", 10)
        except AssertionError:
            pass
    screen = tmux.wait_for(
        lambda s: "FLEET-EXIT=" in s and s.rstrip().endswith(PROMPT.strip()) and s,
        "the shell prompt after fleet quit", 15)
    assert "FLEET-EXIT=0" in screen, screen
    assert "Traceback" not in screen, screen
    # nothing else left on the terminal: no Python warning (asyncssh's import
    # raises some), no library log line (asyncio's "socket.send() raised
    # exception."): those go to the log file
    joined = tmux.run("capture-pane", "-p", "-J", "-t", "t")  # wrapped lines joined
    left = joined.split("; echo FLEET-EXIT=$?", 1)[1].split("FLEET-EXIT=0", 1)[0]
    assert left.strip() == "", left

    # the terminal is given back as it was
    assert tmux.display("#{alternate_on}") == "0"  # main screen again
    assert tmux.display("#{cursor_flag}") == "1"  # cursor shown
    assert tmux.display("#{mouse_any_flag}") == "0"  # no mouse reporting left on
    tmux.text("stty -a | tr ';' '\\n' | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo|isig|icrnl|opost)' | sort | tr '\\n' ' '; echo")
    tmux.keys("Enter")
    line = re.compile(r"^(?:-?\w+ ){4}-?\w+$", re.M)  # five modes, one line
    modes = tmux.wait_for(lambda s: (m := line.search(s)) and m.group(0), "stty output", 10)
    assert modes.split() == ["echo", "icanon", "icrnl", "isig", "opost"], modes


def test_wheel_ships_the_bundled_profiles_templates_and_themes(tmp_path):
    """`pip wheel` of a copy of the source (an in-tree build would leave build/
    and *.egg-info behind in the repository)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    # as a checkout has them: the top-level profiles/ and themes/, and the
    # symlinks in fleet/bundled/ that put them inside the package
    for name in ("fleet", "profiles", "themes"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert (src / "fleet/bundled/profiles").is_symlink()
    out = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "--disable-pip-version-check", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(out.glob("fleet-*.whl"))
    assert len(wheels) == 1, wheels
    entries = zipfile.ZipFile(wheels[0]).infolist()
    names = {e.filename for e in entries}
    # files, not the symlinks of the checkout
    assert all(stat.S_ISREG(e.external_attr >> 16) for e in entries
               if e.filename.startswith("fleet/bundled/")), entries
    assert "fleet/bundled/profiles/demo.yaml" in names
    assert "fleet/bundled/profiles/lab.example.yaml" in names
    templates = {n for n in names if n.startswith("fleet/bundled/profiles/templates/")}
    shipped = {f"fleet/bundled/profiles/templates/{p.name}"
               for p in (ROOT / "profiles/templates").iterdir() if p.is_file()}
    assert shipped and shipped <= templates, shipped - templates
    themes = {n for n in names if re.fullmatch(r"fleet/bundled/themes/[^/]+\.yaml", n)}
    expected = {f"fleet/bundled/themes/{p.name}"
                for p in (ROOT / "themes").glob("*.yaml")}
    assert len(expected) >= 4 and expected == themes, (expected, themes)


def test_the_console_starts_the_demos_second_site_and_a_killed_console_leaves_no_children(
        tmp_path, tmux):
    """`fleet --profile demo` starts the second site too (site status shows it
    connected through its agent); SIGKILL to the console, which can clean up
    nothing, still leaves none of the second site's processes behind."""
    import json

    from support.procs import alive, descendants

    profile = write_demo_profile(tmp_path, name="demo", machines=2, misbehave=False,
                                 install_seconds=1, ports=free_ports(), subnet_octet=175,
                                 second_site=free_ports(),
                                 options={"stagger_seconds": 1, "ipxe_size": 4096})
    tmux.text(f"{FLEET} --profile {profile}")
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "profile demo" in s and "Machines" in s, "the console", 30)
    shell = int(tmux.display("#{pane_pid}"))
    consoles = [p for p, c in descendants(shell).items()
                if f"--profile {profile}" in c and "--headless" not in c]
    assert len(consoles) == 1, descendants(shell)

    deadline = time.monotonic() + 60
    rows: dict = {}
    while time.monotonic() < deadline and not rows.get("demo-east", {}).get("connected"):
        seen = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                               str(profile), "--format", "json", "site", "status"],
                              env=tmux.env, capture_output=True, text=True, timeout=60)
        rows = {r["site"]: r for r in json.loads(seen.stdout or "[]")}
        time.sleep(0.3)
    assert rows["demo-east"]["connected"], rows
    assert rows["demo-east"]["version"] == rows["demo"]["version"]

    east = {p: c for p, c in descendants(consoles[0]).items() if "--profile demo-east" in c}
    assert any(c.endswith("--profile demo-east serve") for c in east.values()), east
    os.kill(consoles[0], 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in east):
        time.sleep(0.1)
    assert not [p for p in east if alive(p)], east
