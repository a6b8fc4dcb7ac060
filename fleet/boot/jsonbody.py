"""A request body as JSON, with its nesting bounded before it is parsed.

The bodies fleet accepts (call-home, the wiper's report) are at most three
levels deep; a 64 KiB body of `[[[[...` would make `json.loads` raise
RecursionError (an HTTP 500) and any later walk over it recurse as deeply.
Counting brackets outside strings first costs one pass over at most MAX_BODY
bytes and turns both into bad input.
"""

from __future__ import annotations

import json
from typing import Any

#: deeper than any body fleet reads, far below the interpreter's recursion limit
MAX_DEPTH = 32

class BadJson(ValueError):
    """The body is not JSON fleet will read (not UTF-8, not JSON, or too deep)."""


def parse_body(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8") from None
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadJson("the body is not valid JSON") from None


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise BadJson when arrays/objects nest deeper than `max_depth`.

    One linear pass (a regex for string literals backtracks quadratically on
    bodies full of unterminated escaped quotes)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > max_depth:
                raise BadJson(f"the body nests deeper than {max_depth} levels")
        elif ch == "]" or ch == "}":
            depth -= 1
