from __future__ import annotations

import pytest

from support.profiles import use_isolated_env, write_profile


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """Keep fleet's config/data/state/cache dirs inside the test's tmp dir."""
    env = use_isolated_env(monkeypatch, tmp_path)
    return env


@pytest.fixture
def profile_path(tmp_path, xdg):
    return write_profile(tmp_path)


@pytest.fixture
async def engine(profile_path):
    from fleet.engine import Engine

    eng = await Engine.open(profile_path)
    yield eng
    await eng.close()
