"""The control socket's exchange: JSON lines framed and bounded by
fleet.sites.protocol (FrameReader, parse_frame, encode).

    client  {"control": 1, "key": "...", "parser": "...", "argv": [...],
             "command": [...], "cwd": "/abs", "read_only": false}
    server  {"out": "text"} | {"err": "text"}    as the command writes them
            {"exit": 0}                           last
            {"local": "why"}                      instead: run it in your own process
    client  {"cancel": true}                      Ctrl-C / SIGTERM (or just hang up)

One request per connection. "parser" stamps the headless parser the client
parsed with (its file's mtime and size): a running fleet that loaded another one
(fleet upgraded under a running console) tells the client to run locally,
rather than reject options it does not know. Text frames carry at most TEXT_CHUNK characters, so
a frame stays under the protocol's MAX_FRAME whatever a command prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fleet.sites.protocol import MAX_FRAME, ProtocolError, one_line

#: the exchange's version: a peer sending another is told to run locally
CONTROL = 1
#: characters of output per frame (JSON escapes at most 6 bytes each)
TEXT_CHUNK = 64 * 1024
MAX_ARGS = 4096


def _parser_stamp() -> str:
    from fleet.headless import parser

    st = os.stat(parser.__file__)
    return f"{st.st_mtime_ns}:{st.st_size}"


#: this process's parser (the server's: the one it loaded at its start)
PARSER_STAMP = _parser_stamp()


@dataclass(frozen=True)
class Request:
    key: str
    parser: str
    argv: list[str]  # what preceded `--`
    command: list[str]  # the remote command after `--`
    cwd: str
    read_only: bool


def request_frame(key: str, argv: list[str], command: list[str], read_only: bool) -> dict:
    return {"control": CONTROL, "key": key, "parser": PARSER_STAMP, "argv": argv,
            "command": command, "cwd": os.getcwd(), "read_only": read_only}


def _strings(frame: dict, name: str) -> list[str]:
    value = frame.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_input", f"{name} must be a list of strings")
    if len(value) > MAX_ARGS:
        raise ProtocolError("bad_input", f"{name} has more than {MAX_ARGS} items")
    if any("\0" in v for v in value):
        raise ProtocolError("bad_input", f"{name} holds a NUL character")
    return value


def check_request(frame: dict[str, Any]) -> Request:
    """A parsed frame as a Request; ProtocolError("bad_input"/"version") if not one."""
    unknown = set(frame) - {"control", "key", "parser", "argv", "command", "cwd",
                            "read_only"}
    if unknown:
        raise ProtocolError("bad_input", f"unknown field {one_line(sorted(unknown)[0], 40)!r}")
    if frame.get("control") != CONTROL:
        raise ProtocolError("version", f"control exchange {one_line(repr(frame.get('control')), 20)}"
                                       f" is not {CONTROL}")
    key, cwd, read_only = frame.get("key"), frame.get("cwd"), frame.get("read_only")
    stamp = frame.get("parser")
    for name, value in (("key", key), ("parser", stamp)):
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise ProtocolError("bad_input", f"{name} must be a string of 1 to 64 characters")
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or "\0" in cwd or len(cwd) > 4096:
        raise ProtocolError("bad_input", "cwd must be an absolute path")
    if not isinstance(read_only, bool):
        raise ProtocolError("bad_input", "read_only must be true or false")
    return Request(key, stamp, _strings(frame, "argv"), _strings(frame, "command"), cwd, read_only)


#: commands a running fleet does not run for a client, and why
LOCAL_COMMANDS = {
    "serve": "serve runs its own site",
    "agent": "an agent serves its own stdin and stdout",
    "profile": "profile tools need no engine",
    "shell": "a shell needs this terminal",
}


def runs_locally(args: Any) -> str | None:
    """Why this parsed command must run in the client's own process, or None."""
    why = LOCAL_COMMANDS.get(args.command)
    if why is None and args.command == "job" and args.job_command == "run":
        why = "a job worker runs the job in its own process"
    return why


def text_frames(stream: str, text: str) -> list[dict[str, str]]:
    return [{stream: text[i:i + TEXT_CHUNK]} for i in range(0, len(text), TEXT_CHUNK)] or []


assert TEXT_CHUNK * 6 + 64 < MAX_FRAME
