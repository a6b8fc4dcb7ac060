"""The in-app terminal widget: recorded vim/top/less byte streams (real
programs under a real pty at 80x24, TERM=xterm-256color: fixtures/record.py)
render to the expected screens; keys, paste, wheel, scrollback and resize."""

from __future__ import annotations

from pathlib import Path

import pyte
import pytest
from textual.app import App, ComposeResult

from fleet.tui.widgets.terminal import SequenceFilter, Terminal, VTScreen, key_bytes, line_text

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = (FIXTURES / "sample.py.txt").read_text().splitlines()
PROMPT = b"op@console:~$ vim sample.py\r\n"


def recording(name: str, part: int) -> bytes:
    return (FIXTURES / f"{name}.{part}.bin").read_bytes()


class Emulator:
    """The widget's parsing half without Textual, fed in 7-byte pieces (every
    sequence gets cut somewhere, as network reads cut them)."""

    def __init__(self, cols=80, rows=24):
        self.replies: list[str] = []
        self.vt = VTScreen(cols, rows, reply=self.replies.append)
        self.stream = pyte.ByteStream(self.vt)
        self.filter = SequenceFilter()

    def feed(self, data: bytes, piece: int = 7) -> "Emulator":
        for i in range(0, len(data), piece):
            self.stream.feed(self.filter(data[i:i + piece]))
        return self

    def row(self, y: int) -> str:
        return line_text(self.vt.buffer[y], self.vt.columns).rstrip()

    def rows(self) -> list[str]:
        return [self.row(y) for y in range(self.vt.lines)]


def test_vim_draws_the_file_the_filler_and_the_status_line_then_restores_the_shell():
    emu = Emulator().feed(PROMPT).feed(recording("vim", 0))
    rows = emu.rows()
    assert rows[:len(SAMPLE)] == SAMPLE  # the file, line by line (not the shell's prompt)
    assert rows[len(SAMPLE):23] == ["~"] * (23 - len(SAMPLE))
    assert rows[23].startswith('"sample.py" 10L, 131B') and rows[23].endswith("All")
    assert "1,1" in rows[23]
    vt = emu.vt
    assert vt.alternate and (vt.cursor.x, vt.cursor.y) == (0, 0) and not vt.cursor.hidden
    # syntax colours: a comment (16 colours), `def` (256-colour 130), the filler
    assert vt.buffer[0][0].fg == "blue" and vt.buffer[0][0].data == "#"
    assert vt.buffer[4][0].data == "d" and vt.buffer[4][0].fg == "af5f00"
    assert vt.buffer[10][0].fg == "brightblue"
    # vim's `CSI >4;2m` (modifyOtherKeys) and its DCS probe did not leak in
    assert not any(c.underscore for y in range(24) for c in vt.buffer[y].values())
    assert "zz" not in "".join(rows)
    assert emu.replies and all(r.startswith("\x1b[") for r in emu.replies)  # CPR answers
    emu.feed(recording("vim", 1))  # `:q`
    assert not vt.alternate
    assert emu.row(0) == PROMPT.decode().strip() and emu.row(2) == ""
    assert emu.vt.history == type(emu.vt.history)(maxlen=emu.vt.history.maxlen)


def test_top_draws_its_header_and_the_process_table():
    emu = Emulator().feed(recording("top", 0))
    rows = emu.rows()
    assert rows[0].startswith("top - ") and "load average:" in rows[0]
    assert rows[1].startswith("Tasks:") and rows[2].startswith("%Cpu(s):")
    header = next(y for y, r in enumerate(rows) if r.split()[:2] == ["PID", "USER"])
    assert header > 3 and "COMMAND" in rows[header]
    assert all(c.reverse for c in [emu.vt.buffer[header][x] for x in range(80)])
    count = rows[1].split()[1]
    x = rows[1].index(count)
    assert emu.vt.buffer[1][x].bold and not emu.vt.buffer[1][0].bold
    assert rows[header + 1].split()[0].isdigit()
    assert emu.vt.cursor.hidden
    emu.feed(recording("top", 1))  # `q`
    assert not emu.vt.cursor.hidden


def test_less_pages_with_a_standout_prompt_and_leaves_the_alternate_screen():
    emu = Emulator().feed(PROMPT).feed(recording("less", 0))
    rows = emu.rows()
    assert rows[:23] == [f"line {i:03d} of the less sample" for i in range(1, 24)]
    assert rows[23] == "lines.txt" and emu.vt.buffer[23][0].reverse
    emu.feed(recording("less", 1))  # space: the next page
    assert emu.row(0) == "line 024 of the less sample" and emu.row(23) == ":"
    emu.feed(recording("less", 2))  # q
    assert not emu.vt.alternate and emu.row(0) == PROMPT.decode().strip()


def test_scrollback_and_resize_keep_the_cursor_line():
    emu = Emulator(20, 5).feed(b"".join(b"line %d\r\n" % i for i in range(1, 31)) + b"$ ")
    assert emu.row(4) == "$" and len(emu.vt.history) == 26
    assert line_text(emu.vt.history[-1], 20).strip() == "line 26"
    emu.vt.resize(3, 20)  # shorter: the top goes to history, the prompt stays
    assert emu.rows() == ["line 29", "line 30", "$"] and emu.vt.cursor.y == 2
    emu.vt.resize(3, 10)
    assert emu.vt.columns == 10 and emu.row(0) == "line 29"
    emu.feed(b"\x1b[?1049h" + b"x\r\n" * 10 + b"\x1b[?1049l")
    assert len(emu.vt.history) == 28  # the alternate screen's scrolling is not kept
    emu.feed(b"\x1b[?1049h\x1bc")  # a reset inside the alternate screen leaves it
    assert not emu.vt.alternate
    emu.feed(b"\x1b[H\x1b[2J\x1b[3J")  # `clear`
    assert not emu.vt.history and emu.rows() == ["", "", ""]


@pytest.mark.parametrize("seq,expect", [
    (b"\x1b[38:2::255:0:0mR", ("ff0000", False)),
    (b"\x1b[38:5:196mR", ("ff0000", False)),
    (b"\x1b[4:3mR", ("default", True)),
    (b"\x1bP+q544e\x1b\\R", ("default", False)),
    (b"\x1b[>4;2mR", ("default", False)),
    (b"\x1b[?4mR", ("default", False)),
])
def test_sequences_pyte_misreads_are_fixed_even_when_cut(seq, expect):
    for piece in (1, 3, len(seq)):
        emu = Emulator(10, 2).feed(seq, piece)
        char = emu.vt.buffer[0][0]
        assert (char.data, char.fg, char.underscore) == ("R", *expect), (seq, piece)


def test_keys_become_xterm_sequences():
    assert key_bytes("up") == b"\x1b[A" and key_bytes("up", app_cursor=True) == b"\x1bOA"
    assert key_bytes("home", app_cursor=True) == b"\x1bOH" and key_bytes("end") == b"\x1b[F"
    assert key_bytes("shift+up") == b"\x1b[1;2A" and key_bytes("ctrl+right") == b"\x1b[1;5C"
    assert key_bytes("pageup") == b"\x1b[5~" and key_bytes("delete") == b"\x1b[3~"
    assert key_bytes("f1") == b"\x1bOP" and key_bytes("f5") == b"\x1b[15~"
    assert key_bytes("f12") == b"\x1b[24~" and key_bytes("shift+f3") == b"\x1b[1;2R"
    assert key_bytes("ctrl+a", "\x01") == b"\x01" and key_bytes("ctrl+c", "\x03") == b"\x03"
    assert key_bytes("ctrl+right_square_bracket") == b"\x1d"
    assert key_bytes("alt+x", "x") == b"\x1bx" and key_bytes("alt+up") == b"\x1b[1;3A"
    assert key_bytes("enter", "\r") == b"\r" and key_bytes("tab", "\t") == b"\t"
    assert key_bytes("shift+tab") == b"\x1b[Z" and key_bytes("backspace") == b"\x7f"
    assert key_bytes("escape", "\x1b") == b"\x1b" and key_bytes("é", "é") == "é".encode()


class TermApp(App):
    def __init__(self):
        super().__init__()
        self.sent: list[bytes] = []
        self.replies: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []

    def compose(self) -> ComposeResult:
        yield Terminal(send=self.sent.append, reply=self.replies.append,
                       resized=lambda c, r: self.sizes.append((c, r)))


async def test_widget_keys_paste_wheel_scrollback_and_size():
    app = TermApp()
    async with app.run_test(size=(40, 10)) as pilot:
        term = app.query_one(Terminal)
        term.focus()
        await pilot.pause()
        assert (term.cols, term.rows) == (40, 10) and app.sizes[-1] == (40, 10)
        await pilot.press("h", "i", "enter", "up", "ctrl+c", "tab", "escape")
        assert b"".join(app.sent) == b"hi\r\x1b[A\x03\t\x1b"
        term.feed(b"\x1b[?1h")  # DECCKM: application cursor keys
        app.sent.clear()
        await pilot.press("up", "left")
        assert app.sent == [b"\x1bOA", b"\x1bOD"]
        term.feed(b"\x1b[6n")  # the program asks where the cursor is
        assert app.replies == [b"\x1b[1;1R"]
        # paste: plain, then bracketed once the program asks for it
        from textual import events
        app.sent.clear()
        term.post_message(events.Paste("a\nb"))
        await pilot.pause()
        term.feed(b"\x1b[?2004h")
        term.post_message(events.Paste("c"))
        await pilot.pause()
        assert app.sent == [b"a\rb", b"\x1b[200~c\x1b[201~"]
        # scrollback: the wheel and shift+pageup show older lines, typing returns
        term.feed(b"".join(b"row %02d\r\n" % i for i in range(40)))
        await pilot.pause()
        assert "row 39" in term.screen_lines()[-2]
        await pilot.press("shift+pageup")
        assert term.scroll_back == 9
        assert term.render_line(0).text.startswith("row 22")  # rows 31-39 were on screen
        term._wheel(events.MouseScrollUp(term, 1, 1, 0, 0, 0, False, False, False), True)
        assert term.scroll_back == 12 and term.render_line(0).text.startswith("row 19")
        app.sent.clear()
        await pilot.press("x")
        assert term.scroll_back == 0 and app.sent == [b"x"]
        # in the alternate screen without mouse reporting the wheel sends arrows
        term.feed(b"\x1b[?1049h")
        app.sent.clear()
        term._wheel(events.MouseScrollDown(term, 1, 1, 0, 0, 0, False, False, False), False)
        assert app.sent == [b"\x1bOB" * 3]
        term.feed(b"\x1b[?1000h\x1b[?1006h")
        app.sent.clear()
        term._wheel(events.MouseScrollUp(term, 4, 2, 0, 0, 0, False, False, False), True)
        assert app.sent == [b"\x1b[<64;5;3M"]
        await pilot.resize_terminal(50, 12)
        await pilot.pause()
        assert app.sizes[-1] == (50, 12) and (term.cols, term.rows) == (50, 12)
