"""Profiles written into a test's tmp dir from the YAML files in
tests/support/profiles/ (with overrides merged in), and an environment that
keeps fleet's XDG files inside it."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

PROFILES = Path(__file__).with_name("profiles")


def profile_data(base: str = "basic") -> dict:
    """A fresh copy of tests/support/profiles/<base>.yaml as plain data."""
    return yaml.safe_load((PROFILES / f"{base}.yaml").read_text())


def merged(base, override):
    """`override` laid over `base`: mappings merge key by key, lists of mappings
    with a `name` merge item by item on that name (new names are appended), and
    anything else in `override` replaces what `base` had. Neither is changed."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merged(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if _named_list(base) and _named_list(override):
        out = [copy.deepcopy(item) for item in base]
        where = {item["name"]: i for i, item in enumerate(out)}
        for item in override:
            if item["name"] in where:
                out[where[item["name"]]] = merged(out[where[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(override)


def _named_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, dict) and "name" in item for item in value)


def write_profile(folder: Path, name: str = "t", base: str = "basic",
                  overrides: dict | None = None) -> Path:
    """Write <folder>/<name>.yaml: the `base` profile named `name` (with store
    ./<name>.db), `overrides` merged over it; returns its path."""
    data = merged(profile_data(base), {"name": name, "store": f"./{name}.db"})
    return dump_profile(folder / f"{name}.yaml", merged(data, overrides or {}))


def dump_profile(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


XDG_VARS = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
            "XDG_RUNTIME_DIR")


def use_isolated_env(monkeypatch, folder: Path) -> dict[str, str]:
    """Point this test's XDG dirs into `folder` (and forget FLEET_PROFILE);
    returns the environment for `fleet` subprocesses."""
    env = isolated_env(folder)
    for key in XDG_VARS:
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("FLEET_PROFILE", raising=False)
    return env


def isolated_env(folder: Path) -> dict[str, str]:
    """Environment for a `fleet` subprocess whose XDG dirs live under `folder`."""
    env = dict(os.environ)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(folder / sub)
    # control sockets (fleet.headless.control) of this test's fleets, not the user's
    runtime = folder / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.pop("FLEET_PROFILE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
