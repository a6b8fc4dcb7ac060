"""Hostile profiles through the real CLI: absurd nesting and alias bombs are bad
input (exit 2, one `FILE:LINE: ...` line) at once, never a traceback, a hang or
gigabytes of memory. Anchors and aliases of a normal size still work."""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest

from fleet.profile.yamlpos import MAX_DEPTH, MAX_VALUES

QUICK = 10.0  # seconds; each of these used to recurse to a traceback or run for ever


def _check(env, path, *argv: str) -> tuple[int, str, float]:
    argv = argv or ("profile", "check", str(path))
    t0 = time.monotonic()
    cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", *argv], env=env,
                        capture_output=True, text=True, timeout=60,
                        preexec_fn=_limit_memory)
    return cp.returncode, cp.stderr, time.monotonic() - t0


def _limit_memory() -> None:
    # a bomb that expands anyway fails here (MemoryError) instead of taking the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _laughs(levels: int = 10, width: int = 9) -> str:
    lines = ["version: 1", "name: bomb", "a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"sites: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _merge_laughs(levels: int = 12) -> str:
    lines = ["version: 1", "name: bomb", "m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{x: [*m{i - 1}, *m{i - 1}, *m{i - 1}, *m{i - 1}], "
                     f"<<: *m{i - 1}}}")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "flow-nesting": ("version: 1\nname: deep\nx: " + "[" * 5000 + "]" * 5000 + "\n",
                     3, f"nested deeper than {MAX_DEPTH} levels"),
    "block-nesting": ("version: 1\nname: deep\nx:\n"
                      + "".join("  " * i + f"k{i}:\n" for i in range(1, 300)),
                      MAX_DEPTH + 3, f"nested deeper than {MAX_DEPTH} levels"),
    "billion-laughs": (_laughs(), 0, f"more than {MAX_VALUES:,} values once aliases"),
    "merge-laughs": (_merge_laughs(), 0, f"more than {MAX_VALUES:,} values once aliases"),
    "alias-depth": ("version: 1\nname: deep\n" + "a0: &a0 [x]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 200)), 0,
        f"aliases nest deeper than {MAX_DEPTH} levels"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_profiles_are_bad_input_at_once(tmp_path, xdg, name):
    text, line, message = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    print(f"{name}: {len(text.encode())} bytes")
    for argv in ((), ("--profile", str(path), "machines")):
        rc, err, took = _check(xdg, path, *argv)
        print(f"  {' '.join(argv) or 'profile check'}: exit {rc} in {took:.2f}s")
        assert rc == 2, err
        assert took < QUICK, f"{took:.1f}s"
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"{path}:") and message in err, err
        if line:
            assert err.startswith(f"{path}:{line}: "), err


def test_the_alias_bomb_is_small():
    assert len(_laughs().encode()) < 800


ANCHORED = """\
version: 1
name: anchored
sites:
  - name: rack1
    subnets: [10.91.0.0/24]
    distributor: {address: 10.77.0.1}
deployments:
  - &debian
    name: debian12
    kind: preseed
    kernel: http://10.77.0.1:8080/files/debian12/linux
    initrd: http://10.77.0.1:8080/files/debian12/initrd.gz
  - <<: *debian
    name: debian12-web
nodes:
  - &web {name: web1, site: rack1, address: 10.91.0.11, labels: &role {role: web}}
  - {<<: *web, name: web2, address: 10.91.0.12, labels: *role}
"""


async def test_ordinary_anchors_and_aliases_still_load(tmp_path, xdg):
    path = tmp_path / "anchored.yaml"
    path.write_text(ANCHORED)
    rc, err, _ = _check(xdg, path)
    assert rc == 0, err
    from fleet.profile import load_profile

    profile = load_profile(path)
    assert [d.name for d in profile.deployments] == ["debian12", "debian12-web"]
    assert profile.deployment("debian12-web").kernel.endswith("/linux")
    assert [(n.name, n.address, dict(n.labels)) for n in profile.nodes] == [
        ("web1", "10.91.0.11", {"role": "web"}), ("web2", "10.91.0.12", {"role": "web"})]
