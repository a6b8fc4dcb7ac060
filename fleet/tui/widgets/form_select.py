"""A dropdown for forms: enter submits the form, as it does in the form's text
fields (down, up and space still open the list; enter in the open list picks)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Select


class FormSelect(Select):
    BINDINGS = [Binding("enter", "submit", "Submit", show=False)]

    class Submitted(Message):
        """Enter on the closed dropdown: the form should go."""

        def __init__(self, select: "FormSelect"):
            super().__init__()
            self.select = select

        @property
        def control(self) -> "FormSelect":
            return self.select

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self))
