"""Snapshot tests: each pane, dialog and theme, from a seeded store with a fixed
clock (UTC, no cursor blink) so the SVGs are stable. Update with
`pytest tests/tui --snapshot-update` after looking at the report."""

from __future__ import annotations

import pytest

from tui.conftest import make_app, ready
from tui.seed import MACS

SIZE = (160, 50)


def _before(*keys, cursor: tuple[str, object] | None = None):
    async def run(pilot):
        await ready(pilot)
        if cursor:
            kind, key = cursor
            pane = pilot.app.pane(kind)
            pane.table.focus()
            pane.table.move_cursor_to(key)
            await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.2)
    return run


def test_dashboard(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE, run_before=_before())


@pytest.mark.parametrize("kind", ["machines", "nodes", "jobs", "dist", "events"])
def test_pane_zoomed(snap_compare, seeded_dir, kind):
    keys = ["colon", *kind, "enter"]
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE, run_before=_before(*keys))


def test_marks_and_filter(snap_compare, seeded_dir):
    keys = ["space", "space", "slash", *"discovered", "enter"]
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before(*keys, cursor=("machines", MACS[0][0])))


def test_lease_dialog(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("l", cursor=("machines", MACS[0][0])))


def test_lease_dialog_for_several_machines(snap_compare, seeded_dir):
    keys = ["space", "space", "l", "tab", *"api1"]
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before(*keys, cursor=("machines", MACS[4][0])))


def test_release_dialog(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("r", cursor=("machines", MACS[2][0])))


def test_distributor_dialog(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("o", cursor=("distributors", "rack1")))


def test_details_screen(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("enter", cursor=("machines", MACS[3][0])))


def test_raw_screen(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("y", cursor=("nodes", "edge1")))


def test_help_screen(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=SIZE,
                        run_before=_before("question_mark"))


def test_read_only_header(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir, read_only=True), terminal_size=(160, 12),
                        run_before=_before())


@pytest.mark.parametrize("theme", ["fleet-dark", "fleet-light", "high-contrast", "k9s"])
def test_theme(snap_compare, seeded_dir, theme):
    assert snap_compare(make_app(seeded_dir, theme_name=theme), terminal_size=SIZE,
                        run_before=_before())


def test_dashboard_at_80x24(snap_compare, seeded_dir):
    assert snap_compare(make_app(seeded_dir), terminal_size=(80, 24), run_before=_before())
