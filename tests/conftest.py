"""Shared test setup.

Tests that need root (network namespaces, real sshd/dnsmasq/QEMU) carry
`@pytest.mark.root`; without root they are skipped with the reason "needs root".
CI runs as root, so nothing is skipped there.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["support.fixtures"]


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
