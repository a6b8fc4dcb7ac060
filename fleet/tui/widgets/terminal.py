"""An in-app terminal: a VT emulator widget over pyte.

`Terminal` is a pure widget: `feed(bytes)` gives it what the remote side
wrote; what the user types, pastes or scrolls into the program comes out of
the `send` callback, and the emulator's answers to the program's queries
(cursor position, device attributes) out of `reply` (the owner routes them: a
reply goes to the one channel that asked, typing may go to many); a new size
goes to `resized(cols, rows)`. No I/O here.

What is emulated, and how:
- pyte parses the stream (VT100/VT220/xterm subset: cursor addressing, scroll
  regions, insert/delete, SGR colours 16/256/truecolor, bold, italic,
  underline, strike, reverse, blink, cursor visibility).
- `VTScreen` (a `pyte.Screen`) keeps the scrollback itself: lines that scroll
  off the top of the whole screen go to a deque. Not `pyte.HistoryScreen`: that
  one wraps every attribute access in Python (3x slower on bulk output,
  measured here) and pages by rewriting the live buffer.
- pyte lacks the alternate screen (modes 1049/1047/47): `VTScreen` emulates
  them by swapping in an empty buffer and restoring the saved one (and the
  cursor, for 1049) on leave, so vim, less and top leave the shell's screen as
  it was. Nothing scrolled in the alternate screen enters the scrollback.
- pyte misparses some xterm sequences: `CSI > ...` (e.g. vim's
  modifyOtherKeys `CSI >4;2m` would turn into "underline"), DCS/APC/PM/SOS
  strings (their payload would be drawn as text) and colon sub-parameters in
  SGR (`CSI 38:2::r:g:bm`). `SequenceFilter` drops the first two and rewrites
  the third before pyte sees them, across chunk boundaries.
- Modes pyte only records are honoured here: DECCKM (application cursor keys:
  arrows and home/end send `ESC O x`), bracketed paste (2004), mouse
  reporting (1000/1002/1003 with 1006 SGR coordinates: the wheel goes to the
  program; in the alternate screen without mouse reporting the wheel sends
  arrow keys, as xterm's alternateScroll does; else it scrolls back).
- Keys become xterm byte sequences (`key_bytes`): arrows, home/end, insert,
  delete, page up/down (with shift/alt/ctrl modifiers as `CSI 1;m X`), F1-F12,
  ctrl+letters, alt+key as ESC prefix, tab, shift+tab, backspace (DEL), enter
  (CR). shift+pageup/pagedown scroll back through history instead.
- Not emulated: double-width/height lines, sixel, OSC 52, mouse clicks and
  drags (only the wheel), window title display, reflow on resize.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict, deque
from collections.abc import Callable

import pyte
from pyte.screens import Char, Margins, StaticDefaultDict
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

HISTORY_LINES = 5000

#: private modes, as pyte stores them (shifted left by 5)
DECCKM = 1 << 5
ALT_SCREENS = {47 << 5, 1047 << 5, 1049 << 5}
BRACKETED_PASTE = 2004 << 5
MOUSE_REPORTING = {1000 << 5, 1002 << 5, 1003 << 5}
MOUSE_SGR = 1006 << 5

_NAMED = {"black": 0, "red": 1, "green": 2, "brown": 3, "yellow": 3, "blue": 4,
          "magenta": 5, "cyan": 6, "white": 7}
_NAMED.update({"bright" + k: v + 8 for k, v in list(_NAMED.items())})


# ----------------------------------------------------------------- the emulator

class VTScreen(pyte.Screen):
    """pyte's screen plus scrollback, the alternate screen and a reply hook."""

    def __init__(self, columns: int, lines: int, *, history: int = HISTORY_LINES,
                 reply: Callable[[str], None] | None = None):
        self.history: deque = deque(maxlen=history)
        #: (main buffer, cursor, restore the cursor?) while the alternate screen is on
        self._saved: tuple | None = None
        self.reply = reply
        super().__init__(columns, lines)

    @property
    def alternate(self) -> bool:
        return self._saved is not None

    def _new_buffer(self):
        return defaultdict(lambda: StaticDefaultDict(self.default_char))

    def reset(self) -> None:  # RIS (`ESC c`): the main screen, whatever was on
        super().reset()
        self._saved = None

    def erase_in_display(self, how: int = 0, *args, **kwargs) -> None:
        super().erase_in_display(how, *args, **kwargs)
        if how == 3:  # `clear`'s CSI 3J: the scrollback too
            self.history.clear()

    def index(self) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0 and not self.alternate:
            self.history.append(self.buffer[top])
        super().index()

    def set_mode(self, *modes: int, **kwargs) -> None:
        super().set_mode(*modes, **kwargs)
        if kwargs.get("private") and not self.alternate:
            shifted = {m << 5 for m in modes}
            if shifted & ALT_SCREENS:
                self._saved = (self.buffer, copy.copy(self.cursor),
                               (1049 << 5) in shifted)
                self.buffer = self._new_buffer()
                self.dirty.update(range(self.lines))

    def reset_mode(self, *modes: int, **kwargs) -> None:
        super().reset_mode(*modes, **kwargs)
        if kwargs.get("private") and self.alternate:
            if {m << 5 for m in modes} & ALT_SCREENS:
                buffer, cursor, restore_cursor = self._saved
                self._saved = None
                for y in [y for y in buffer if y >= self.lines]:
                    del buffer[y]
                self.buffer = buffer
                if restore_cursor:
                    cursor.x = min(cursor.x, self.columns - 1)
                    cursor.y = min(cursor.y, self.lines - 1)
                    cursor.hidden = self.cursor.hidden
                    self.cursor = cursor
                self.dirty.update(range(self.lines))

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Like a terminal window: when it gets shorter, the top lines go to the
        scrollback only as far as needed to keep the cursor on screen; the
        empty bottom is dropped first."""
        lines = lines or self.lines
        columns = columns or self.columns
        if lines < self.lines:
            excess = max(0, self.cursor.y - (lines - 1))
            if excess:
                if not self.alternate:
                    self.history.extend(self.buffer[y] for y in range(excess))
                for y in range(self.lines):
                    if y + excess < self.lines:
                        self.buffer[y] = self.buffer[y + excess]
                    else:
                        self.buffer.pop(y, None)
                self.cursor.y -= excess
            for y in [y for y in self.buffer if y >= lines]:
                del self.buffer[y]
            self.lines = lines  # pyte's own resize would now only trim the columns
        super().resize(lines, columns)
        self.dirty.update(range(self.lines))

    def write_process_input(self, data: str) -> None:
        if self.reply is not None:
            self.reply(data)

    def report_device_attributes(self, mode: int = 0, **kwargs) -> None:
        if mode == 0 and not kwargs.get("private"):
            self.write_process_input("\x1b[?62;22c")  # a VT220 with ANSI colour


def _ignore_private(name: str):
    method = getattr(pyte.Screen, name)

    def handler(self, *args, private: bool = False, **kwargs):
        if not private:  # e.g. vim's `CSI ?4m` query: not ours to draw
            return method(self, *args, **kwargs)
    handler.__name__ = name
    return handler


# pyte hands `private=True` to every CSI handler; most do not take it (TypeError)
for _name in set(pyte.Stream.csi.values()) - {"set_mode", "reset_mode", "erase_in_line",
                                               "erase_in_display", "report_device_attributes"}:
    if _name not in VTScreen.__dict__:
        setattr(VTScreen, _name, _ignore_private(_name))


class SequenceFilter:
    """Drops or rewrites the sequences pyte misparses (see the module
    docstring); keeps an incomplete one for the next chunk."""

    _DROP = re.compile(rb"\x1b\[[<=>][0-9;:?]*[ -/]*[@-~]"        # CSI > ... / CSI = ...
                       rb"|\x1b[P_^X].*?(?:\x1b\\|\x07)"             # DCS, APC, PM, SOS
                       rb"|\x1b\[[0-9;]*%[@-~]"                      # vim's CSI 0%m probe
                       rb"|\x1b\[[0-9;:]*:[0-9;:]*m", re.S)          # SGR with colons
    _PARTIAL = re.compile(rb"\x1b(?:\[[<=>0-9;:?%]*|[P_^X](?:(?!\x1b\\|\x07).)*)?\Z", re.S)

    def __init__(self) -> None:
        self._tail = b""

    def __call__(self, data: bytes) -> bytes:
        data = self._tail + data
        self._tail = b""
        partial = self._PARTIAL.search(data, max(0, len(data) - 65536))
        if partial is not None:
            data, self._tail = data[:partial.start()], data[partial.start():]
            if len(self._tail) > 65536:  # a runaway string: give up on it
                self._tail = b""
        return self._DROP.sub(self._rewrite, data)

    @staticmethod
    def _rewrite(m: re.Match) -> bytes:
        seq = m.group(0)
        if not (seq.endswith(b"m") and b":" in seq and seq.startswith(b"\x1b[")):
            return b""
        out: list[str] = []
        for part in seq[2:-1].decode().split(";"):
            sub = part.split(":")
            head = sub[0]
            if head in ("38", "48", "58") and len(sub) >= 3:
                if sub[1] == "5":
                    out += [head, "5", sub[2] or "0"]
                elif sub[1] == "2":
                    rgb = [s or "0" for s in sub[2:]][-3:]
                    if len(rgb) == 3 and head != "58":
                        out += [head, "2", *rgb]
            elif head == "4" and len(sub) > 1:
                out.append("24" if sub[1] == "0" else "4")
            elif head:
                out.append(head)
        return ("\x1b[" + ";".join(out) + "m").encode() if out else b""


# ----------------------------------------------------------------- keys

_CSI_TILDE = {"insert": 2, "delete": 3, "pageup": 5, "pagedown": 6,
              "f5": 15, "f6": 17, "f7": 18, "f8": 19, "f9": 20, "f10": 21, "f11": 23, "f12": 24}
_CURSOR = {"up": "A", "down": "B", "right": "C", "left": "D", "home": "H", "end": "F"}
_SS3_F = {"f1": "P", "f2": "Q", "f3": "R", "f4": "S"}
_CTRL_PUNCT = {"at": 0, "space": 0, "left_square_bracket": 27, "backslash": 28,
               "right_square_bracket": 29, "circumflex_accent": 30, "underscore": 31,
               "minus": 31, "question_mark": 127}
_PLAIN = {"enter": b"\r", "tab": b"\t", "escape": b"\x1b", "backspace": b"\x7f",
          "ctrl+h": b"\x08", "shift+tab": b"\x1b[Z", "space": b" "}


def key_bytes(key: str, character: str | None = None, *, app_cursor: bool = False) -> bytes | None:
    """The bytes an xterm sends for a Textual key name (None: not a key we send)."""
    if key in _PLAIN:
        return _PLAIN[key]
    *mods, name = key.split("+")
    mods_set = set(mods)
    if name == "tab" and mods_set == {"shift"}:
        return b"\x1b[Z"
    m = 1 + ("shift" in mods_set) + 2 * ("alt" in mods_set or "meta" in mods_set) \
        + 4 * ("ctrl" in mods_set)
    if name in _CURSOR:
        final = _CURSOR[name]
        if m > 1:
            return f"\x1b[1;{m}{final}".encode()
        return (f"\x1bO{final}" if app_cursor else f"\x1b[{final}").encode()
    if name in _SS3_F:
        return (f"\x1b[1;{m}{_SS3_F[name]}" if m > 1 else f"\x1bO{_SS3_F[name]}").encode()
    if name in _CSI_TILDE:
        code = _CSI_TILDE[name]
        return (f"\x1b[{code};{m}~" if m > 1 else f"\x1b[{code}~").encode()
    if mods_set == {"ctrl"}:
        if len(name) == 1 and name.isalpha():
            return bytes([ord(name.lower()) - 96])
        if name in _CTRL_PUNCT:
            return bytes([_CTRL_PUNCT[name]])
    if mods_set and mods_set <= {"alt", "meta", "shift"} and ("alt" in mods_set
                                                              or "meta" in mods_set):
        rest = key_bytes("+".join([*(x for x in mods if x == "shift"), name]), character,
                         app_cursor=app_cursor) if "shift" in mods_set else (
            key_bytes(name, None, app_cursor=app_cursor) if len(name) > 1 else name.encode())
        if character and len(character) == 1 and character.isprintable():
            rest = character.encode()
        return b"\x1b" + rest if rest else None
    if character:
        return character.encode()
    return None


# ----------------------------------------------------------------- rendering

def _color(name: str) -> Color | None:
    if name == "default":
        return None
    index = _NAMED.get(name)
    if index is not None:
        return Color.from_ansi(index)
    if len(name) == 6:
        try:
            return Color.from_rgb(int(name[0:2], 16), int(name[2:4], 16), int(name[4:6], 16))
        except ValueError:
            return None
    return None


_style_cache: dict[tuple, Style] = {}


def char_style(char: Char) -> Style:
    key = char[1:]
    style = _style_cache.get(key)
    if style is None:
        style = Style(color=_color(char.fg), bgcolor=_color(char.bg), bold=char.bold or None,
                      italic=char.italics or None, underline=char.underscore or None,
                      strike=char.strikethrough or None, reverse=char.reverse or None,
                      blink=char.blink or None)
        if len(_style_cache) < 4096:
            _style_cache[key] = style
    return style


def line_text(line, columns: int) -> str:
    """A screen line as plain text (wide characters' stubs skipped)."""
    return "".join(line[x].data for x in range(columns))


class Terminal(Widget, can_focus=True):
    """The emulator widget (see the module docstring)."""

    DEFAULT_CSS = """
    Terminal { width: 1fr; height: 1fr; background: $background; color: $foreground; }
    """

    def __init__(self, *, cols: int = 80, rows: int = 24,
                 send: Callable[[bytes], None] | None = None,
                 reply: Callable[[bytes], None] | None = None,
                 resized: Callable[[int, int], None] | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.send = send
        self.reply = reply
        self.resized = resized
        self.vt = VTScreen(cols, rows, reply=self._reply)
        self.stream = pyte.ByteStream(self.vt)
        self._filter = SequenceFilter()
        self.scroll_back = 0  # lines scrolled back into history (0: the live screen)
        self._cache: dict[int, Strip] = {}
        self._cache_base: Style | None = None
        #: False: input is not taken (the shell ended); keys bubble to the tabs
        self.accepting = True

    # -- bytes in -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """What the program wrote: parsed now, drawn at the next refresh."""
        try:
            self.stream.feed(self._filter(data))
        except Exception:  # a sequence pyte chokes on: lose it, keep the terminal
            self.stream = pyte.ByteStream(self.vt)
        for y in self.vt.dirty:
            self._cache.pop(y, None)
        self.vt.dirty.clear()
        self.refresh()

    def _reply(self, text: str) -> None:
        if self.reply is not None:
            self.reply(text.encode())

    # -- reading the screen (tests, the handoff's first picture) ----------------------

    @property
    def cols(self) -> int:
        return self.vt.columns

    @property
    def rows(self) -> int:
        return self.vt.lines

    def screen_lines(self) -> list[str]:
        """The live screen as text, one string per row (trailing blanks kept)."""
        return [line_text(self.vt.buffer[y], self.vt.columns) for y in range(self.vt.lines)]

    def cell(self, x: int, y: int) -> Char:
        return self.vt.buffer[y][x]

    def ansi_snapshot(self) -> bytes:
        """The live screen as text with the cursor placed: what a real terminal
        shows first when the shell is handed over (colours are not replayed)."""
        rows = [line.rstrip() for line in self.screen_lines()]
        cur = self.vt.cursor
        return ("\x1b[H\x1b[2J" + "\r\n".join(rows) +
                f"\x1b[{cur.y + 1};{cur.x + 1}H").encode()

    # -- bytes out ------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.scroll_back:
            self.scroll_back = 0
            self.refresh()
        if self.send is not None and self.accepting:
            self.send(data)

    async def _on_key(self, event: events.Key) -> None:
        if not self.accepting:
            return  # bubbles: the tab's own keys (close, back) take it
        event.stop()
        event.prevent_default()
        if event.key in ("shift+pageup", "shift+pagedown"):
            self.scroll_history((1 if event.key == "shift+pageup" else -1)
                                * max(1, self.vt.lines - 1))
            return
        data = key_bytes(event.key, event.character, app_cursor=DECCKM in self.vt.mode)
        if data:
            self._send(data)

    def _on_paste(self, event: events.Paste) -> None:
        event.stop()
        event.prevent_default()
        if not self.accepting or not event.text:
            return
        text = event.text.replace("\r\n", "\r").replace("\n", "\r")
        if BRACKETED_PASTE in self.vt.mode:
            text = "\x1b[200~" + text.replace("\x1b[201~", "") + "\x1b[201~"
        self._send(text.encode())

    def _wheel(self, event: events.MouseEvent, up: bool) -> None:
        event.stop()
        event.prevent_default()
        mode = self.vt.mode
        if self.accepting and mode & MOUSE_REPORTING:
            button = 64 if up else 65
            x, y = event.x + 1, event.y + 1
            if MOUSE_SGR in mode:
                self._send(f"\x1b[<{button};{x};{y}M".encode())
            elif x < 223 and y < 223:
                self._send(bytes([27, 91, 77, 32 + button, 32 + x, 32 + y]))
        elif self.accepting and self.vt.alternate:
            self._send((key_bytes("up" if up else "down", app_cursor=DECCKM in mode)) * 3)
        else:
            self.scroll_history(3 if up else -3)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._wheel(event, True)

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._wheel(event, False)

    def scroll_history(self, lines: int) -> None:
        """Positive: further back into the scrollback."""
        back = max(0, min(len(self.vt.history), self.scroll_back + lines))
        if back != self.scroll_back:
            self.scroll_back = back
            self.refresh()

    # -- size -------------------------------------------------------------------------

    def _on_resize(self, event: events.Resize) -> None:
        cols, rows = event.size.width, event.size.height
        if cols < 2 or rows < 1 or (cols, rows) == (self.vt.columns, self.vt.lines):
            return
        self.vt.resize(rows, cols)
        self._cache.clear()
        self.scroll_back = min(self.scroll_back, len(self.vt.history))
        self.refresh()
        if self.resized is not None:
            self.resized(cols, rows)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self.vt.columns

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.vt.lines

    def _on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        self.refresh()

    # -- drawing ----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        vt = self.vt
        base = self.rich_style
        if base != self._cache_base:
            self._cache.clear()
            self._cache_base = base
        width = self.size.width
        row = y - self.scroll_back
        if row < 0:
            hist = vt.history
            index = len(hist) + row
            if index < 0:
                return Strip.blank(width, base)
            return self._strip(hist[index], base, width)
        if row >= vt.lines:
            return Strip.blank(width, base)
        cursor = vt.cursor
        show_cursor = (row == cursor.y and not cursor.hidden and self.has_focus
                       and self.accepting)
        if not show_cursor:
            strip = self._cache.get(row)
            if strip is None:
                strip = self._cache[row] = self._strip(vt.buffer[row], base, width)
            return strip
        return self._strip(vt.buffer[row], base, width, cursor.x)

    def _strip(self, line, base: Style, width: int, cursor_x: int = -1) -> Strip:
        segments: list[Segment] = []
        text: list[str] = []
        key = None
        style = base
        cursor_style = Style(reverse=True)
        columns = min(self.vt.columns, width)
        for x in range(columns):
            char = line[x]
            if not char.data:  # the stub right of a wide character
                continue
            style_key = char[1:] if x != cursor_x else (char[1:], "cursor")
            if style_key != key:
                if text:
                    segments.append(Segment("".join(text), style))
                text = []
                key = style_key
                style = base + char_style(char)
                if x == cursor_x:
                    style = style + cursor_style if not char.reverse else \
                        style + Style(reverse=False)
            text.append(char.data)
        if text:
            segments.append(Segment("".join(text), style))
        strip = Strip(segments)
        return strip.extend_cell_length(width, base) if strip.cell_length < width else \
            strip.crop(0, width)
