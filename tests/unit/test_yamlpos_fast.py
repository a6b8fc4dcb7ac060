"""libyaml's parser (used when PyYAML has it) and the pure-Python one build the
same located tree: values, lines, key lines and the plain/quoted flag the
validator's "quote it" hints depend on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleet.profile import yamlpos

BUNDLED = Path(yamlpos.__file__).resolve().parents[2] / "profiles"
EXTRA = """\
version: 1
base: &base {user: root, labels: {role: web, backup: on}}
nodes:
  - <<: *base
    name: '007'
    id: 007
    when: 10:20:30
    note: "quoted"
  - name: plain
"""


def _flat(y: yamlpos.Y, path: str = "") -> list[tuple]:
    out = [(path, y.kind, y.line, y.key_line, y.raw, y.plain, y.bad,
            repr(y.value) if y.kind == "scalar" else None)]
    if y.kind == "map":
        out.append((path, "key_lines", tuple(sorted(y.key_lines.items()))))
        for k, v in y.value.items():
            out += _flat(v, f"{path}.{k}")
    elif y.kind == "seq":
        for i, v in enumerate(y.value):
            out += _flat(v, f"{path}[{i}]")
    return out


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text", [p.read_text() for p in sorted(BUNDLED.glob("*.yaml"))]
                         + [EXTRA], ids=[p.name for p in sorted(BUNDLED.glob("*.yaml"))]
                         + ["anchors-and-typing"])
def test_fast_and_slow_parsers_agree(text, monkeypatch):
    fast_tree, fast_issues = yamlpos.compose_text(text, "p.yaml")
    monkeypatch.setattr(yamlpos, "_FAST_LOADER", None)
    slow_tree, slow_issues = yamlpos.compose_text(text, "p.yaml")
    assert fast_tree is not None and _flat(fast_tree) == _flat(slow_tree)
    assert fast_issues == slow_issues


def test_broken_yaml_is_reported_in_the_pure_parsers_words():
    tree, issues = yamlpos.compose_text("a: [1, 2\nb: 3\n", "p.yaml")
    assert tree is None and len(issues) == 1
    assert issues[0].message.startswith("invalid YAML:") and issues[0].line >= 2
