"""`?` shows keys as a person types them (`?`, `ctrl+]`), grouped by where they
work (everywhere, every pane, each pane's own verbs, shell tabs) in the order
they are declared, with the user's keymap applied."""

from __future__ import annotations

from fleet.tui.app import FleetApp
from fleet.tui.keyhelp import key_name
from fleet.tui.screens.help import HelpScreen
from tui.conftest import ready, settle

SIZE = (120, 60)


def write_config(engine, text: str) -> None:
    path = engine.paths.config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_key_names_are_the_ones_people_type():
    assert key_name("question_mark") == "?"
    assert key_name("ctrl+right_square_bracket") == "ctrl+]"
    assert key_name("ctrl+pagedown") == "ctrl+pgdn"
    assert key_name("less_than_sign") == "<"
    assert key_name("enter") == "enter" and key_name("space") == "space"
    assert key_name("B") == "B" and key_name("f12") == "f12"


async def test_help_groups_friendly_keys_by_where_they_work(seeded_engine):
    write_config(seeded_engine, "keymap:\n  verb.lease: ctrl+l\n")
    app = FleetApp(seeded_engine.profile, engine=seeded_engine, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert await settle(pilot, lambda: isinstance(app.screen, HelpScreen)
                            and app.screen.query("#bindings"))
        text = str(app.screen.query_one("#bindings").render())
        lines = text.splitlines()
        assert "question_mark" not in text and "right_square_bracket" not in text
        assert "colon" not in text and "less_than_sign" not in text
        headings = [line for line in lines if line and not line.startswith(" ")]
        assert headings == ["Everywhere", "Every pane", "Machines pane (1)",
                            "Nodes pane (2)", "Distributors pane (4)", "Shell tabs"]

        def row(bid: str) -> list[str]:
            (found,) = [line for line in lines if line.endswith(" " + bid)]
            return found.split()

        assert row("app.help")[0] == "?"
        assert row("tab.dashboard")[0] == "ctrl+]"
        assert row("verb.lease")[0] == "ctrl+l"  # the user's keymap
        # each verb under its pane's heading; declaration order within a section
        order = [line.split()[-1] for line in lines if line.startswith(" ")]
        assert order.index("verb.lease") < order.index("verb.release") < \
            order.index("verb.shell") < order.index("verb.distributor")
        assert order.index("app.command") < order.index("app.filter") < \
            order.index("app.help")
        assert not any(bid.startswith(("tab.", "shell.")) for bid in
                       order[:order.index("verb.details")])
