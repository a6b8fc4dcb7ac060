"""Node selection expressions, as in `fleet --headless nodes --select EXPR`.

    all                      every node
    site=rack1               by site
    role=web                 by label
    name=web*                by name, shell-style wildcards
    site=rack1,role=web      several terms: all must match
    !role=db                 a leading ! negates a term

Values accept shell wildcards (`*`, `?`, `[...]`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from fleet.core.model import Node


class SelectError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    key: str
    pattern: str
    negate: bool = False

    def matches(self, node: Node) -> bool:
        if self.key == "name":
            value = node.name
        elif self.key == "site":
            value = node.site or ""
        else:
            value = node.labels.get(self.key)
        hit = value is not None and fnmatch.fnmatchcase(str(value), self.pattern)
        return hit != self.negate


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...]

    def matches(self, node: Node) -> bool:
        return all(t.matches(node) for t in self.terms)


def parse_selector(text: str) -> Selector:
    text = text.strip()
    if text in ("", "all", "*"):
        return Selector(())
    terms = []
    for raw in text.split(","):
        raw = raw.strip()
        negate = raw.startswith("!")
        raw = raw.removeprefix("!").strip()
        key, eq, pattern = raw.partition("=")
        key, pattern = key.strip(), pattern.strip()
        if not eq or not key or not pattern:
            raise SelectError(f"bad selection term {raw!r}: write key=value "
                              f"(name=, site= or a label), or 'all'")
        terms.append(Term(key, pattern, negate))
    return Selector(tuple(terms))
