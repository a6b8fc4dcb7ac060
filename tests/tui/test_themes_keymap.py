"""Themes (YAML -> Textual themes, live switching, choice order, broken files) and
keymaps remapped from config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.tui.app import FleetApp
from fleet.tui.main import build_parser
from fleet.tui.screens.lease import LeaseDialog
from fleet.tui.themes import ThemeFileError, bundled_dir, load_theme_file, load_themes
from tui.conftest import ready, settle
from tui.seed import MACS

SIZE = (160, 50)


def write_config(engine, text: str) -> Path:
    path = engine.paths.config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bundled_themes_load_with_state_colours():
    found = load_themes(bundled_dir())
    assert not found.errors
    assert {"fleet-dark", "fleet-light", "high-contrast", "k9s"} <= set(found.themes)
    from fleet.core.model import JobState, MachineState, Reachability

    every_state = {f"state-{s.value}" for kind in (MachineState, Reachability, JobState)
                   for s in kind}
    for theme in found.themes.values():
        assert every_state <= set(theme.variables), every_state - set(theme.variables)
    assert found.themes["fleet-light"].dark is False


def test_broken_theme_file_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprimary: not-a-colour\n")
    with pytest.raises(ThemeFileError, match="primary: not a colour"):
        load_theme_file(bad)
    (tmp_path / "worse.yaml").write_text("primary: [unclosed\n")
    found = load_themes(tmp_path)
    assert found.themes == {} and len(found.errors) == 2


async def test_theme_switch_live_with_command(seeded_engine):
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "fleet-dark"
        table = app.pane("machines").table
        dark_failed = table._styles["failed"]
        await pilot.press("colon", *"theme fleet-light", "enter")
        assert app.theme == "fleet-light"
        assert await settle(pilot, lambda: table._styles["failed"] != dark_failed)
        await pilot.press("colon", *"theme nosuch", "enter")
        assert app.theme == "fleet-light"
        assert any("no theme 'nosuch'" in n.message for n in app._notifications)


async def test_theme_from_config_and_overrides(seeded_engine, monkeypatch):
    write_config(seeded_engine, "theme: k9s\n")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine)
    async with app.run_test(size=SIZE):
        assert app.theme == "k9s"
    monkeypatch.setenv("FLEET_THEME", "high-contrast")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine)
    async with app.run_test(size=SIZE):
        assert app.theme == "high-contrast"
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, theme_name="fleet-light")
    async with app.run_test(size=SIZE):
        assert app.theme == "fleet-light"


def test_cli_theme_option_and_env(monkeypatch):
    monkeypatch.setenv("FLEET_THEME", "k9s")
    assert build_parser().parse_args([]).theme == "k9s"
    assert build_parser().parse_args(["--theme", "fleet-light"]).theme == "fleet-light"


async def test_broken_user_theme_falls_back_with_one_notification(seeded_engine):
    themes = seeded_engine.paths.user_themes_dir
    themes.mkdir(parents=True)
    (themes / "mine.yaml").write_text("name: mine\nprimary: '#12'\n")
    write_config(seeded_engine, "theme: mine\n")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "fleet-dark"
        notes = [n.message for n in app._notifications]
        assert len(notes) == 1
        assert "mine.yaml" in notes[0] and "using fleet-dark" in notes[0]


async def test_user_theme_file_is_offered(seeded_engine):
    themes = seeded_engine.paths.user_themes_dir
    themes.mkdir(parents=True)
    (themes / "ops.yaml").write_text("name: ops\nprimary: '#AA3300'\nvariables:\n"
                                     "  state-failed: '#FF0000'\n")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, theme_name="ops")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "ops"
        assert app.get_css_variables()["state-failed"] == "#FF0000"
        # a variable the file leaves out comes from fleet's defaults
        assert "state-stalled" in app.get_css_variables()


async def test_keymap_remap_from_config(seeded_engine):
    write_config(seeded_engine, "keymap:\n  verb.lease: ctrl+l\n  pane.maximize: m\n")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        table = app.pane("machines").table
        table.focus()
        table.move_cursor_to(MACS[0][0])
        await pilot.press("l")  # the old key no longer leases
        await pilot.pause()
        assert not isinstance(app.screen, LeaseDialog)
        await pilot.press("ctrl+l")
        assert await settle(pilot, lambda: isinstance(app.screen, LeaseDialog))
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("m")
        assert app.screen.maximized is app.pane("machines")
