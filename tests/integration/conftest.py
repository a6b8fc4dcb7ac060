from __future__ import annotations

import pytest

from support.profiles import isolated_env, write_profile


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """Keep fleet's config/data/state/cache dirs inside the test's tmp dir."""
    env = isolated_env(tmp_path)
    for key in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("FLEET_PROFILE", raising=False)
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
