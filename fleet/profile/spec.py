"""A small declarative validator over located YAML (`yamlpos.Y`).

A converter is a callable ``conv(ctx, y, path) -> value``. It either returns
the converted value, raises `Invalid` (the caller records it at ``y.at``), or
records its own nested issues on `ctx` and returns `INVALID`. Mappings are
described by a `Schema`: a table of `Field`s, so a new key is one line::

    Field("poll_seconds", Int(min=1), default=10)

Every converter here reports bools where numbers belong, strings where
numbers belong, lists where mappings belong and so on in the same words.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import values
from .errors import ProfileIssue
from fleet.core.config import FrozenDict, freeze
from .yamlpos import Y


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


#: Returned by a converter that has already recorded its issues.
INVALID: Any = _Invalid()
#: Keys starting with this are ignored anywhere (a place for YAML anchors: ``x-defaults: &d {...}``).
EXTENSION_PREFIX = "x-"
#: A field default meaning "no default" (used with required=False: the key is simply absent).
MISSING: Any = object()


class Invalid(Exception):
    """Raised by a converter: `message` is recorded at the value's line (or `line`)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Ctx:
    file: str
    base: Path  # the profile's folder: relative paths resolve against it
    issues: list[ProfileIssue] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    # kind ("jumps", "sites", ...) -> name -> line where defined
    defined: dict[str, dict[str, int]] = field(default_factory=dict)
    # (kind, name, line, path) for every reference to a named thing
    refs: list[tuple[str, str, int, str]] = field(default_factory=list)

    def error(self, line: int, path: str, message: str) -> None:
        self.issues.append(ProfileIssue(self.file, line, path, message))


Converter = Callable[[Ctx, Y, str], Any]


def convert(conv: Converter, ctx: Ctx, y: Y, path: str) -> Any:
    """Run a converter; record `Invalid` at the value's line. Records the value's line."""
    ctx.lines.setdefault(path, y.at)
    if y.bad:
        return INVALID
    try:
        return conv(ctx, y, path)
    except Invalid as exc:
        ctx.error(exc.line or y.at, path, exc.message)
        return INVALID


# --------------------------------------------------------------------------- words


def describe(y: Y) -> str:
    """How a value reads in an error: 'a list', 'boolean yes', "string '8080'"."""
    if y.kind == "map":
        return "a mapping"
    if y.kind == "seq":
        return "a list"
    v = y.value
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"boolean {y.raw}"
    if isinstance(v, int):
        return f"integer {y.raw}"
    if isinstance(v, float):
        return f"number {y.raw}"
    if isinstance(v, str):
        return f"string {v!r}"
    return f"{type(v).__name__} {y.raw}"


def _quote_hint(y: Y) -> str:
    """For a scalar YAML typed as something else: suggest quoting it."""
    if y.kind == "scalar" and y.plain and not isinstance(y.value, str) and y.value is not None:
        return f" (quote it: '{y.raw}')"
    return ""


def suggest(word: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _scalar(y: Y, expected: str) -> Any:
    if y.kind != "scalar":
        raise Invalid(f"expected {expected}, got {describe(y)}")
    return y.value


# --------------------------------------------------------------------------- leaves


def Str(*, nonempty: bool = True, check: Callable[[str], Any] | None = None, what: str = "a string") -> Converter:
    """A string. `check(s)` may raise ValueError (message shown) or return a normalised value."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, what)
        if not isinstance(v, str):
            raise Invalid(f"expected {what}, got {describe(y)}{_quote_hint(y)}")
        if nonempty and not v.strip():
            raise Invalid(f"expected {what}, got an empty string")
        if check is not None:
            try:
                out = check(v)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            return v if out is None else out
        return v

    return conv


def Text(*, what: str = "a string") -> Converter:
    """Any string, empty allowed; numbers are taken as their source text."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, what)
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return y.raw
        raise Invalid(f"expected {what}, got {describe(y)}{_quote_hint(y)}")

    return conv


def Raw(parse: Callable[[str], Any], what: str) -> Converter:
    """A scalar parsed from its source text (so ``10:20:30:40:50:59`` stays a MAC
    rather than YAML 1.1's base-60 integer). `parse` raises ValueError."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, what)
        if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
            raise Invalid(f"expected {what}, got {describe(y)}")
        text = v if isinstance(v, str) else y.raw
        try:
            return parse(text)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return conv


Name = Str(check=values.check_name, what="a name")
IPv4 = Raw(lambda s: str(values.parse_ipv4(s)), "an IPv4 address")
IPv6 = Raw(lambda s: str(values.parse_ipv6(s)), "an IPv6 address")
Host = Raw(values.parse_host, "an IP address or host name")
IPv4Net = Raw(values.parse_ipv4_network, "an IPv4 network (10.0.0.0/24) or address")
MAC = Raw(values.parse_mac, "a MAC address")


def Int(*, min: int | None = None, max: int | None = None, what: str = "an integer") -> Converter:
    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, what)
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(f"expected {what}, got {describe(y)}")
        if (min is not None and v < min) or (max is not None and v > max):
            if min is not None and max is not None:
                raise Invalid(f"{v} is outside {min}..{max}")
            if min is not None:
                raise Invalid(f"{v} is less than {min}")
            raise Invalid(f"{v} is more than {max}")
        return v

    return conv


Port = Int(min=1, max=65535, what="a port number (1..65535)")


def Number(*, positive: bool = False, min: float | None = None, what: str = "a number") -> Converter:
    """An int or float, returned as float. Bools and strings are refused."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, what)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Invalid(f"expected {what}, got {describe(y)}")
        if v != v or v in (float("inf"), float("-inf")):
            raise Invalid(f"expected {what}, got {y.raw}")
        if positive and v <= 0:
            raise Invalid(f"must be more than 0, got {y.raw}")
        if min is not None and v < min:
            raise Invalid(f"must be at least {min}, got {y.raw}")
        return float(v)

    return conv


def Bool() -> Converter:
    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, "true or false")
        if not isinstance(v, bool):
            raise Invalid(f"expected true or false, got {describe(y)}")
        return v

    return conv


def Enum(*choices: str) -> Converter:
    shown = " | ".join(choices)

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, f"one of {shown}")
        if isinstance(v, str) and v in choices:
            return v
        text = v if isinstance(v, str) else y.raw
        hint = suggest(text, choices) if isinstance(text, str) else None
        more = f"; did you mean {hint!r}?" if hint else ""
        raise Invalid(f"{describe(y)} is not one of {shown}{more}")

    return conv


def PathV(*, must_exist: str | None = None) -> Converter:
    """A file-system path: ``~`` expands, relative paths resolve against the
    profile's folder. must_exist: None, "file" or "dir"."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, "a path")
        if not isinstance(v, str) or not v.strip():
            raise Invalid(f"expected a path, got {describe(y)}{_quote_hint(y)}")
        p = Path(v).expanduser()
        if not p.is_absolute():
            p = ctx.base / p
        p = Path(os.path.normpath(p))
        if must_exist == "file" and not p.is_file():
            what = "is a directory, not a file" if p.is_dir() else "not found"
            raise Invalid(f"file {what}: {p}")
        if must_exist == "dir" and not p.is_dir():
            raise Invalid(f"directory not found: {p}")
        return p

    return conv


def Ref(kind: str, what: str) -> Converter:
    """A name of something defined elsewhere in the profile (checked once all is read)."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        v = _scalar(y, f"the name of a {what}")
        if not isinstance(v, str) or not v:
            raise Invalid(f"expected the name of a {what}, got {describe(y)}{_quote_hint(y)}")
        ctx.refs.append((kind, v, y.at, path))
        return v

    return conv


def Anything() -> Converter:
    """Any YAML value, frozen (dicts -> FrozenDict, lists -> tuples)."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        return freeze(y.plain_value())

    return conv


def AnyMap() -> Converter:
    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        if y.kind != "map":
            raise Invalid(f"expected a mapping, got {describe(y)}")
        return freeze(y.plain_value())

    return conv


# --------------------------------------------------------------------------- collections


def ListOf(item: Converter, *, what: str = "a list", unique: bool = False) -> Converter:
    """A YAML list, converted item by item; a tuple (with INVALID where an item failed)."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        if y.kind != "seq":
            raise Invalid(f"expected {what}, got {describe(y)}")
        out = []
        seen: dict[Any, int] = {}
        for i, sub in enumerate(y.value):
            p = f"{path}[{i}]"
            v = convert(item, ctx, sub, p)
            if unique and v is not INVALID:
                if v in seen:
                    ctx.error(sub.at, p, f"{v} is listed twice (first at line {seen[v]})")
                    v = INVALID
                else:
                    seen[v] = sub.at
            out.append(v)
        return tuple(out)

    return conv


def StrMap(*, key: Converter | None = None, what: str = "a mapping of names to strings") -> Converter:
    """Labels: string keys, scalar values taken as text (``rack: 3`` is "3").
    Booleans and nulls are refused (``yes`` is the classic trap)."""

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        if y.kind != "map":
            raise Invalid(f"expected {what}, got {describe(y)}")
        out: dict[str, str] = {}
        bad = False
        for k, sub in y.value.items():
            p = f"{path}.{k}"
            ctx.lines.setdefault(p, y.key_lines.get(k, sub.at))
            if key is not None:
                try:
                    key(ctx, Y("scalar", k, y.key_lines.get(k, sub.at), raw=k), p)
                except Invalid as exc:
                    ctx.error(y.key_lines.get(k, sub.at), p, exc.message)
                    bad = True
                    continue
            if sub.bad:
                bad = True
                continue
            if sub.kind != "scalar" or sub.value is None or isinstance(sub.value, bool):
                ctx.error(sub.at, p, f"expected a string, got {describe(sub)}{_quote_hint(sub)}")
                bad = True
                continue
            out[k] = sub.value if isinstance(sub.value, str) else sub.raw
        return INVALID if bad else FrozenDict(out)

    return conv


@dataclass(frozen=True)
class Field:
    """One key of a mapping.

    key:      the YAML key
    conv:     the converter for its value
    required: missing (or null) is an error
    default:  used when absent or null; MISSING = leave it out of the kwargs
    factory:  a callable giving the default (for mutable/late defaults)
    attr:     the dataclass field name, when it differs from the key
    """

    key: str
    conv: Converter
    required: bool = False
    default: Any = MISSING
    factory: Callable[[], Any] | None = None
    attr: str | None = None

    @property
    def name(self) -> str:
        return self.attr or self.key.replace("-", "_")


@dataclass(frozen=True)
class Schema:
    """A mapping with known keys. `make(**values)` builds the result; `check(ctx, obj, y, path)`
    runs after a successful build for checks across fields of this mapping."""

    fields: tuple[Field, ...]
    make: Callable[..., Any] | None = None
    what: str = "a mapping"
    check: Callable[[Ctx, Any, Y, str], None] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def values(self, ctx: Ctx, y: Y, path: str) -> tuple[dict[str, Any], bool]:
        """Convert every field. Returns (kwargs, ok); records every issue."""
        if y.kind != "map":
            raise Invalid(f"expected {self.what}, got {describe(y)}")
        ok = True
        known = {f.key: f for f in self.fields}
        for key in y.value:
            if key not in known and not key.startswith(EXTENSION_PREFIX):
                hint = suggest(key, known)
                if hint:
                    msg = f"unknown key {key!r} (did you mean {hint!r}?)"
                else:
                    msg = f"unknown key {key!r} (known keys: {', '.join(known)})"
                ctx.error(y.key_lines.get(key, y.at), _join(path, key), msg)
                ok = False
        out: dict[str, Any] = {}
        for f in self.fields:
            p = _join(path, f.key)
            sub = y.value.get(f.key)
            if sub is None or sub.is_null:
                if f.required:
                    if sub is None:
                        ctx.error(y.at, p, f"missing required key {f.key!r}")
                    else:
                        ctx.error(sub.at, p, f"{f.key!r} needs a value")
                    ok = False
                elif f.factory is not None:
                    out[f.name] = f.factory()
                elif f.default is not MISSING:
                    out[f.name] = f.default
                continue
            v = convert(f.conv, ctx, sub, p)
            if v is INVALID or (isinstance(v, tuple) and any(x is INVALID for x in v)):
                ok = False
            out[f.name] = v
        return out, ok

    def __call__(self, ctx: Ctx, y: Y, path: str) -> Any:
        vals, ok = self.values(ctx, y, path)
        if not ok:
            return INVALID
        obj = self.make(**vals) if self.make is not None else vals
        if self.check is not None:
            n = len(ctx.issues)
            self.check(ctx, obj, y, path)
            if len(ctx.issues) > n:
                return INVALID
        return obj


def Named(kind: str, schema: Schema, *, what: str) -> Converter:
    """A list of mappings that each have a unique `name` (jumps, sites, ...).

    Names are registered in ``ctx.defined[kind]`` straight from the YAML, so a
    reference to an item that has some other error is not also reported as
    undefined.
    """

    def conv(ctx: Ctx, y: Y, path: str) -> Any:
        if y.kind != "seq":
            raise Invalid(f"expected a list of {what}s, got {describe(y)}")
        defined = ctx.defined.setdefault(kind, {})
        out = []
        for i, item in enumerate(y.value):
            p = f"{path}[{i}]"
            if item.kind == "map":
                name_y = item.value.get("name")
                if name_y is not None and name_y.kind == "scalar" and isinstance(name_y.value, str):
                    name = name_y.value
                    if name in defined:
                        ctx.error(
                            name_y.at,
                            f"{p}.name",
                            f"duplicate {what} name {name!r} (first defined at line {defined[name]})",
                        )
                        out.append(INVALID)
                        convert(schema, ctx, item, p)
                        continue
                    defined[name] = name_y.at
            out.append(convert(schema, ctx, item, p))
        return tuple(out)

    return conv


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
