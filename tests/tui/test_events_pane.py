"""The events pane: SSH commands verbatim, and details of the event chosen."""

from __future__ import annotations

from fleet.tui.app import FleetApp
from fleet.tui.screens.details import DetailsScreen, RawScreen
from tui.conftest import ready, settle

SIZE = (160, 50)
# markup, a newline, an escape sequence and more than the 200 characters the
# event message keeps: all must survive to the details view
COMMAND = ("printf '[bold]not markup[/bold] \\x1b[31m'; echo \x1b[2J done\n"
           "for i in $(seq 3); do echo \"$i\"; done; " + "x" * 240 + " # end")


def app_for(engine) -> FleetApp:
    return FleetApp(engine.profile, engine=engine, blink=False)


async def _events(engine, *events) -> list[int]:
    await engine.record(*events)
    return [e.id for e in await engine.events(len(events))]


async def test_ssh_commands_show_verbatim_and_stand_out(seeded_engine):
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await seeded_engine.record(seeded_engine.event(
            "ssh.command", "web1", "web1 (via gw1): short",
            node="web1", command=COMMAND, via="gw1", job=None))
        pane = app.pane("events")
        table = pane.table
        assert await settle(pilot, lambda: any(r.fields["kind"] == "ssh.command"
                                               for r in table.rows.values()))
        key = next(k for k, r in table.rows.items() if r.fields["kind"] == "ssh.command")
        row = table.rows[key]
        assert row.values[4] == "via gw1 $ " + COMMAND  # the command, not the short message
        cells = table._cells(row.values, 0)
        assert "\n" not in cells[4] and "\x1b" not in cells[4]  # pictured, not acted on
        assert "␤" in cells[4] and "␛[2J" in cells[4]
        assert table.row_style(row) == "accent"
        plain = next(r for r in table.rows.values() if r.fields["kind"] != "ssh.command")
        assert table.row_style(plain) is None
        # the rendered line carries the accent style (bold) on the command row
        pane.table.focus()
        assert table.move_cursor_to(key)
        await pilot.press("down")  # the cursor row is drawn in the cursor style instead
        await pilot.pause()
        y = table.index_of(key) + 1 - table.scroll_offset.y
        strip = table.render_line(y)
        assert "via gw1 $ printf" in strip.text
        assert any(seg.style and seg.style.bold for seg in strip if "printf" in seg.text)
        # a /filter finds it by its command
        await pilot.press("slash", *"seq 3", "enter")
        assert table.visible_keys() == [key]
        await pilot.press("escape")

        assert table.move_cursor_to(key)
        await pilot.press("enter")
        assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen))
        screen = app.screen
        assert screen.title_text == f"event {key}"
        shown = str(screen.query_one("#section-0").render())
        assert shown == COMMAND.replace("\x1b", "␛")  # whole, newline kept, no markup
        assert "[bold]not markup[/bold]" in shown and shown.endswith("x # end")
        await pilot.press("escape")
        await pilot.press("y")
        assert await settle(pilot, lambda: isinstance(app.screen, RawScreen))
        assert app.screen.record["data"]["command"] == COMMAND
        assert app.screen.record["data"]["via"] == "gw1"
        await pilot.press("escape")
        assert await settle(pilot, lambda: app.screen is app.screen_stack[0])
        await pilot.press("c")  # copies the command itself, verbatim
        assert app.clipboard == COMMAND
        assert any(n.message.startswith("copied printf '[bold]") for n in app._notifications)


async def test_details_show_the_chosen_older_event_not_the_newest(seeded_engine):
    """Regression: enter on an older event showed the newest event's record."""
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await seeded_engine.record(seeded_engine.event("audit.note", "web1", "the older one", n=1))
        await seeded_engine.record(seeded_engine.event("audit.note", "db1", "the newest one", n=2))
        table = app.pane("events").table
        assert await settle(pilot, lambda: sum(r.fields["kind"] == "audit.note"
                                               for r in table.rows.values()) == 2)
        newest, older = [k for k in table.visible_keys()
                         if table.rows[k].fields["kind"] == "audit.note"]
        assert newest > older
        for key, subject, message, n in ((older, "web1", "the older one", 1),
                                         (newest, "db1", "the newest one", 2)):
            table.focus()
            assert table.move_cursor_to(key)
            await pilot.press("enter")
            assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen))
            assert app.screen.title_text == f"event {key}"
            assert app.screen.record["subject"] == subject
            assert app.screen.record["message"] == message
            assert app.screen.record["data"] == {"n": n}
            await pilot.press("escape")
            await pilot.press("y")
            assert await settle(pilot, lambda: isinstance(app.screen, RawScreen))
            assert f"message: {message}" in app.screen.text()
            await pilot.press("escape")
            assert await settle(pilot, lambda: app.screen is app.screen_stack[0])


async def test_a_click_moves_the_cursor_to_that_row(seeded_engine):
    """Enter after a click opens the clicked event, not the one under the old cursor."""
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("5", "z")  # the events pane, zoomed
        table = app.pane("events").table
        assert table.cursor == 0
        third = table.key_at(2)
        await pilot.click(table, offset=(5, 3))  # line 0 is the header
        assert table.cursor == 2 and table.cursor_key == third
        await pilot.press("enter")
        assert await settle(pilot, lambda: isinstance(app.screen, DetailsScreen))
        assert app.screen.title_text == f"event {third}"


async def test_keys_typed_right_after_slash_go_to_the_filter(seeded_engine):
    """Keys queued behind `/` (a paste, tmux send-keys) reach the filter line, not
    the table's verbs and keys (`x` would open the exec dialog, `j` move, `2` focus)."""
    from textual import events

    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("1")  # from the machines pane, `2` then `/` at once
        for key, char in [("2", "2"), ("slash", "/"), *[(c, c) for c in "xj2web"],
                          ("enter", None)]:
            app.post_message(events.Key(key, char))  # all queued before any is handled
        nodes = app.pane("nodes").table
        assert await settle(pilot, lambda: nodes.filter.text == "xj2web")
        assert app.screen is app.screen_stack[0]  # no exec dialog
        assert not app.pane("machines").table.filter


async def test_events_pane_keeps_showing_the_newest(seeded_engine):
    """A cursor on the top row stays on top as events arrive (the newest stay in
    view); a cursor moved down stays on its event."""
    app = app_for(seeded_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        table = app.pane("events").table
        assert table.cursor == 0
        before = len(table.rows)
        for i in range(12):  # more than the pane's height
            seeded_engine.clock.now += 1
            await seeded_engine.record(seeded_engine.event("audit.note", "x", f"note {i}"))
        assert await settle(pilot, lambda: len(table.rows) == before + 12)
        table._scroll_cursor_into_view()  # what a re-layout (on_resize) does
        await pilot.pause()
        newest = table.visible_keys()[0]
        assert table.cursor == 0 and table.cursor_key == newest
        assert table.scroll_offset.y == 0
        table.focus()
        await pilot.press("down", "down")
        held = table.cursor_key
        await seeded_engine.record(seeded_engine.event("audit.note", "x", "one more"))
        assert await settle(pilot, lambda: len(table.rows) == before + 13)
        assert table.cursor_key == held and table.cursor == 3
