from __future__ import annotations

import asyncio
import time

import pytest

from tui.seed import T0, FixedClock, open_seeded, paths_in


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    """Timestamps render in UTC so pictures do not depend on the host's zone."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("FLEET_THEME", raising=False)
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
async def seeded_engine(tmp_path):
    eng = await open_seeded(tmp_path)
    yield eng
    await eng.close()


@pytest.fixture
def seeded_dir(tmp_path):
    """A seeded store on disk (closed), for apps that open their own engine."""
    async def go():
        eng = await open_seeded(tmp_path)
        await eng.close()
    asyncio.run(go())
    return tmp_path


def make_app(folder, **kw):
    """A FleetApp that opens the seeded store itself, with the fixed clock."""
    from fleet.profile import load_profile
    from fleet.tui.app import FleetApp

    return FleetApp(load_profile(folder / "t.yaml"), paths=paths_in(folder),
                    clock=FixedClock(T0), blink=False, **kw)


async def ready(pilot, refreshes: int = 1) -> None:
    """Wait until the app has loaded (and the given number of refreshes ran)."""
    app = pilot.app
    for _ in range(200):
        if app.refresh_count >= refreshes and not app._refreshing and not app._pending:
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def settle(pilot, predicate, tries: int = 200) -> bool:
    for _ in range(tries):
        if predicate():
            return True
        await pilot.pause(0.02)
    return predicate()
