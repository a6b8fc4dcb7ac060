"""The forms open with nothing chosen in their dropdowns (Textual's Select.NULL):
the build form with no distributor, the lease form in a profile without
deployments. Each once crashed the console on opening."""

from __future__ import annotations

from textual.widgets import Select

from fleet.engine import Engine
from fleet.tui.app import FleetApp
from fleet.tui.screens.build import BuildDialog
from fleet.tui.screens.lease import LeaseDialog
from support.profiles import write_profile
from tui.conftest import ready, settle
from tui.seed import FixedClock, T0, open_seeded, paths_in

SIZE = (120, 40)


class RecordingBuilds:
    """Stands in for engine.builds: a real build needs the builders' tools."""

    def __init__(self):
        self.calls = []

    async def build(self, kind, **options):
        self.calls.append((kind, options))
        return type("Outcome", (), {"job_id": 7})()


async def test_build_form_without_a_distributor_builds_for_none(tmp_path):
    builds = RecordingBuilds()
    engine = await open_seeded(tmp_path, builds=builds)
    try:
        app = FleetApp(engine.profile, engine=engine, blink=False)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            app.push_screen(BuildDialog(engine, None))
            assert await settle(pilot, lambda: isinstance(app.screen, BuildDialog)
                                and app.screen.query("#distributor"))
            assert app.screen.query_one("#distributor", Select).value is Select.NULL
            app.screen.query_one("#build").press()
            assert await settle(pilot, lambda: builds.calls)
            assert builds.calls == [("ipxe", {"wait": False})]
            assert await settle(pilot, lambda: not isinstance(app.screen, BuildDialog))
    finally:
        await engine.close()


async def test_lease_form_in_a_profile_without_deployments_says_so(tmp_path):
    profile = write_profile(tmp_path, overrides={"deployments": []})
    from fleet.profile import load_profile

    engine = await Engine.open(load_profile(profile), paths=paths_in(tmp_path),
                               clock=FixedClock(T0))
    try:
        app = FleetApp(engine.profile, engine=engine, blink=False)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            app.push_screen(LeaseDialog(engine, ["52:54:00:12:34:01"]))
            assert await settle(pilot, lambda: isinstance(app.screen, LeaseDialog)
                                and app.screen.query("#deployment"))
            assert app.screen.query_one("#deployment", Select).value is Select.NULL
            app.screen.query_one("#lease").press()
            error = app.screen.query_one("#error")
            assert await settle(pilot, lambda: "choose a deployment" in str(error.render()))
    finally:
        await engine.close()
