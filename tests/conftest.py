"""Shared test setup.

Tests that need root (network namespaces, real sshd/dnsmasq, QEMU on a tap)
carry `@pytest.mark.root`; without root they are skipped with the reason "needs
root". CI runs as root, so nothing is skipped there.

Fixtures for every tier (the root testbed's are in support/fixtures.py):
- `xdg`: fleet's config/data/state/cache dirs inside the test's tmp dir; the
  environment for `fleet` subprocesses.
- `profile_path`: the basic profile (support/profiles/basic.yaml) as <tmp>/t.yaml.
- `engine`: an engine open on that profile (closed after the test).
"""

from __future__ import annotations

import os

import pytest

from support.profiles import use_isolated_env, write_profile

pytest_plugins = ["support.fixtures"]


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    return use_isolated_env(monkeypatch, tmp_path)


@pytest.fixture
def profile_path(tmp_path, xdg):
    return write_profile(tmp_path)


@pytest.fixture
async def engine(profile_path):
    from fleet.engine import Engine

    eng = await Engine.open(profile_path)
    yield eng
    await eng.close()


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
