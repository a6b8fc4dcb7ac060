"""The console serves its control socket (the service fleet.cli gives it): a
`fleet --headless` process beside it runs on the console's engine."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

from fleet.cli import _control_socket
from fleet.headless.control.address import socket_path
from fleet.tui.app import FleetApp
from support.profiles import use_isolated_env
from tui.conftest import ready, settle


async def test_console_runs_a_headless_command_and_removes_its_socket_at_quit(
        seeded_engine, tmp_path, monkeypatch, caplog):
    env = use_isolated_env(monkeypatch, tmp_path)  # the seeded engine's dirs (paths_in)
    caplog.set_level(logging.INFO, logger="fleet.control")
    profile = seeded_engine.profile.path
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False,
                   services=[_control_socket])
    async with app.run_test(size=(160, 50)) as pilot:
        await ready(pilot)
        assert await settle(pilot, lambda: bool(app._running_services))
        path = socket_path(profile, seeded_engine.paths.data_dir)
        assert path.exists()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile", str(profile),
            "machines", "-o", "json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
        assert len(json.loads(out)) == 6
        assert f"control: machines for pid {proc.pid} exited 0" in caplog.text
    assert not path.exists()
