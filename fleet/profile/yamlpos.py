"""YAML with line numbers.

`compose_text` turns YAML text into a tree of `Y` nodes: plain Python scalars
(YAML 1.1 resolution, as `yaml.safe_load` does) plus the line every value and
every mapping key sits on, so the validator can say ``FILE:LINE``. Duplicate
mapping keys, non-string keys, unknown tags and broken YAML come back as
issues instead of exceptions. Anchors, aliases and ``<<`` merges work.

Hostile shapes are issues too, found by one pass over the parser's events
before anything is composed: nesting deeper than MAX_DEPTH (the composer and
the builder recurse per level) and aliases that expand to more than
MAX_VALUES values (a "billion laughs" of a few hundred bytes would otherwise
build a tree of billions of nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (AliasEvent, CollectionEndEvent, CollectionStartEvent,
                         ScalarEvent, StreamEndEvent)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ProfileIssue


#: nesting a profile may use; real ones stay under ten
MAX_DEPTH = 64
#: values (scalars and collections) a profile may hold once aliases are expanded
MAX_VALUES = 100_000


@dataclass(eq=False)
class Y:
    """A located YAML value.

    kind:  "map" (value: dict[str, Y]), "seq" (value: list[Y]) or "scalar".
    line:  where the value starts (1-based).
    key_line: the line of the mapping key this value sits under (0 if none).
    raw:   a scalar's source text (``yes``, ``022``, ``10:20:30``) before typing.
    key_lines: for a mapping, the line of each key.
    """

    kind: str
    value: Any
    line: int
    key_line: int = 0
    raw: str = ""
    plain: bool = False  # an unquoted scalar
    bad: bool = False  # already reported (e.g. an unknown tag): converters skip it
    key_lines: dict[str, int] = field(default_factory=dict)

    @property
    def at(self) -> int:
        """The line to blame for this value: the value itself for scalars,
        the key that introduces it for block collections."""
        if self.kind == "scalar" or not self.key_line:
            return self.line
        return self.key_line

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.value is None

    def plain_value(self) -> Any:
        """The value as plain Python (dicts, lists, scalars), no lines."""
        if self.kind == "map":
            return {k: v.plain_value() for k, v in self.value.items()}
        if self.kind == "seq":
            return [v.plain_value() for v in self.value]
        return self.value


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _mark_line(exc: yaml.MarkedYAMLError) -> int:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else 0


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        text = "; ".join(parts) if parts else "cannot parse"
        if exc.note:
            text += f" ({exc.note})"
        return f"invalid YAML: {text}"
    return f"invalid YAML: {exc}"


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.issues: list[ProfileIssue] = []
        self._active: set[int] = set()
        self._seen: set[int] = set()
        self._quiet = 0

    def issue(self, line: int, key: str, message: str) -> None:
        # A node reached again through an alias was reported the first time.
        if not self._quiet:
            self.issues.append(ProfileIssue(self.file, line, key, message))

    def build(self, node: Node, path: str, key_line: int = 0) -> Y:
        if id(node) in self._active:
            self.issue(_line(node), path, "recursive YAML alias")
            return Y("scalar", None, _line(node), key_line, bad=True)
        again = id(node) in self._seen
        self._seen.add(id(node))
        self._quiet += again
        try:
            return self._build(node, path, key_line)
        finally:
            self._quiet -= again

    def _build(self, node: Node, path: str, key_line: int) -> Y:
        if isinstance(node, ScalarNode):
            return self._scalar(node, path, key_line)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = [self.build(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
                return Y("seq", items, _line(node), key_line)
            assert isinstance(node, MappingNode)
            return self._mapping(node, path, key_line)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: str, key_line: int) -> Y:
        try:
            value = self.loader.construct_object(node)
        except yaml.YAMLError:
            self.issue(_line(node), path, f"unknown YAML tag {node.tag!r}")
            return Y("scalar", node.value, _line(node), key_line, raw=node.value, bad=True)
        return Y("scalar", value, _line(node), key_line, raw=node.value,
                 plain=not node.style)  # None from PyYAML, "" from libyaml

    def _mapping(self, node: MappingNode, path: str, key_line: int) -> Y:
        out: dict[str, Y] = {}
        key_lines: dict[str, int] = {}
        merges: list[Node] = []
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                merges.append(vnode)
                continue
            kline = _line(knode)
            if not isinstance(knode, ScalarNode):
                self.issue(kline, path, "mapping keys must be plain strings, not a list or a mapping")
                continue
            key = knode.value
            sub = f"{path}.{key}" if path else key
            if key in out:
                self.issue(kline, sub, f"duplicate key {key!r} (first at line {key_lines[key]})")
                continue
            key_lines[key] = kline
            out[key] = self.build(vnode, sub, kline)
        # `<<: *anchor` (or a list of them): fills in keys not given explicitly.
        for mnode in merges:
            sources = mnode.value if isinstance(mnode, SequenceNode) else [mnode]
            for src in sources:
                if not isinstance(src, MappingNode):
                    self.issue(_line(src), path, "'<<' merges a mapping (or a list of mappings) only")
                    continue
                merged = self.build(src, path)
                for key, val in merged.value.items():
                    if key not in out:
                        out[key] = val
                        key_lines[key] = merged.key_lines[key]
                        val.key_line = merged.key_lines[key]
        return Y("map", out, _line(node), key_line, key_lines=key_lines)


#: libyaml's parser when PyYAML has it: ~10x faster on a 200-node profile, which is
#: most of a cold `fleet --headless exec`'s start-up. Broken YAML is parsed again
#: by the pure-Python parser, whose messages the validator's tests pin.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def compose_text(text: str, file: str) -> tuple[Y | None, list[ProfileIssue]]:
    """Parse one YAML document. Returns (tree or None, issues).

    The tree is None when the text is not YAML or holds no document; the
    issues then say why (an empty document gives no issue: the caller decides).
    """
    if _FAST_LOADER is not None:
        shape = _check_shape(_FAST_LOADER, text, file)
        if shape is not None:
            return None, [shape]
        fast = _FAST_LOADER(text)
        try:
            node = fast.get_single_node()
        except yaml.YAMLError:
            pass  # report it with the pure-Python parser's words and lines, below
        else:
            if node is None:
                return None, []
            builder = _Builder(fast, file)
            return builder.build(node, ""), builder.issues
        finally:
            fast.dispose()
    return _compose_slow(text, file)


def _compose_slow(text: str, file: str) -> tuple[Y | None, list[ProfileIssue]]:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        return None, [ProfileIssue(file, line, "", f"invalid YAML: character #x{exc.character:04x} is not allowed")]
    loader.dispose()
    shape = _check_shape(yaml.SafeLoader, text, file)
    if shape is not None:
        return None, [shape]
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return None, [ProfileIssue(file, _mark_line(exc), "", _yaml_message(exc))]
        except yaml.YAMLError as exc:
            return None, [ProfileIssue(file, 0, "", _yaml_message(exc))]
        if node is None:
            return None, []
        builder = _Builder(loader, file)
        tree = builder.build(node, "")
        return tree, builder.issues
    finally:
        loader.dispose()


def _check_shape(loader_class, text: str, file: str) -> ProfileIssue | None:
    """The first hostile shape in `text` (too deep, or aliases expanding past
    MAX_VALUES), from its events alone; None when the shape is fine or the
    text does not parse (the composer reports that in its own words)."""
    # Per open collection: [values below it, deepest level below it, its anchor].
    # Per anchor: the values and levels an alias to it brings in.
    stack: list[list] = [[0, 0, None]]
    anchors: dict[str, tuple[int, int]] = {}
    total = 0
    parser = loader_class(text)
    try:
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, StreamEndEvent):
                return None
            line = event.start_mark.line + 1
            if isinstance(event, CollectionStartEvent):
                total += 1
                stack.append([1, 0, event.anchor])
                if len(stack) - 1 > MAX_DEPTH:
                    return ProfileIssue(file, line, "",
                                        f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, CollectionEndEvent):
                values, below, anchor = stack.pop()
                if anchor is not None:
                    anchors[anchor] = (values, below + 1)
                stack[-1][0] += values
                stack[-1][1] = max(stack[-1][1], below + 1)
            elif isinstance(event, ScalarEvent):
                total += 1
                stack[-1][0] += 1
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 0)
            elif isinstance(event, AliasEvent):
                values, levels = anchors.get(event.anchor, (1, 0))
                total += values
                stack[-1][0] += values
                stack[-1][1] = max(stack[-1][1], levels)
                if len(stack) - 1 + levels > MAX_DEPTH:
                    return ProfileIssue(file, line, "",
                                        f"aliases nest deeper than {MAX_DEPTH} levels")
            if total > MAX_VALUES:
                return ProfileIssue(file, line, "", f"more than {MAX_VALUES:,} values once "
                                    f"aliases are expanded (an alias bomb?)")
    except yaml.YAMLError:
        return None
    finally:
        parser.dispose()
