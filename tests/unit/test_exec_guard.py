"""fleet's guard around a remote command (fleet.access.exec.guarded) against the
command sent alone, in the real shells a node runs it with (dash is Debian's sh,
bash root's login shell): the same stdout, stderr (less the guard's pid line,
which fleet takes out) and exit status, for the awkward cases. The one
difference, documented: line numbers are one more (the guard has its own line)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fleet.access.exec import _session_pid, guarded

TAG = "fleet-pid-0123abcd"

COMMANDS = [
    "echo out; echo err >&2; exit 3",
    "echo a \\",                       # a trailing backslash stays literal
    "echo $LINENO\necho $LINENO",      # line numbers as sent
    "if then fi",                      # a syntax error names line 1
    "echo ok\nif then fi",             # ... or line 2
    "cat <<EOF\nhere\nEOF",            # a heredoc without a final newline
    "# only a comment",
    "echo x # a trailing comment",
    "exec echo replaced",
    "cat; echo stdin-was-empty",       # stdin is /dev/null
    "",
    "set -e; false; echo never",
    "f() { echo in-f; }; f",
]


def one_more(text: str) -> str:
    """Line numbers in dash's (`dash: 2: ...`) and bash's (`-c: line 2: ...`)
    messages, and lone $LINENO outputs, plus one."""
    text = re.sub(r"^(\S+: (?:-c: line )?)(\d+)(:)",
                  lambda m: f"{m[1]}{int(m[2]) + 1}{m[3]}", text, flags=re.M)
    return re.sub(r"^(\d+)$", lambda m: str(int(m[1]) + 1), text, flags=re.M)


def run(shell: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", script], input="fed on stdin\n", text=True,
                          capture_output=True, timeout=10)


@pytest.mark.parametrize("shell", ["dash", "bash"])
@pytest.mark.parametrize("command", COMMANDS)
def test_guarded_command_behaves_as_sent_alone(shell, command):
    path = shutil.which(shell)
    assert path, f"{shell} is part of every Debian system"
    alone = run(path, command)
    wrapped = run(path, guarded(command, TAG))
    first, _, rest = wrapped.stderr.partition("\n")
    assert first.startswith(TAG + " ") and _session_pid(first, TAG), wrapped.stderr
    stdout = alone.stdout.replace("fed on stdin\n", "")  # stdin is /dev/null when guarded
    assert ("fed on stdin" in alone.stdout) == command.startswith("cat;")
    assert (wrapped.stdout, rest, wrapped.returncode) == (
        one_more(stdout), one_more(alone.stderr), alone.returncode)


def test_session_pid_takes_only_a_plain_number_above_one():
    assert _session_pid(f"{TAG} 4242", TAG) == [4242]
    for bad in ("1", "0", "-5", "", "12x", "²", "٣٣", "4 2"):
        assert _session_pid(f"{TAG} {bad}", TAG) == [], bad
