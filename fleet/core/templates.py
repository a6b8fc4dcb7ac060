"""The template grammar: `{{ name }}` placeholders and nothing else.

Pure text rules shared by the profile validator (which checks templates at
load, fleet.profile.validate) and the renderer (fleet.boot.templates, which
places validated values). No expressions, filters or statements: a Jinja
statement (`{% if ... %}`) is an error with its line, so a template written
for another tool fails loudly. A literal `{{` cannot be written.

iPXE menus and subscripts (fleet.boot.menus) add their own names: the
placeholders they may use, the built-in subscripts, and `check_menu`.
"""

from __future__ import annotations

import re
from typing import Iterable

MAX_TEMPLATE_BYTES = 1024 * 1024

BRACES = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
JINJA_STATEMENT = re.compile(
    r"\{%-?\s*(if|elif|else|endif|for|endfor|set|macro|endmacro|block|endblock|include|"
    r"import|from|extends|raw|endraw|filter|with|call)\b")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    """A template could not be rendered: unknown placeholder, bad syntax, unsafe value."""


def placeholders(text: str) -> list[str]:
    """The placeholder names used in `text`, in order (syntax errors raise)."""
    names = []
    for match in BRACES.finditer(text):
        names.append(placeholder_name(text, match))
    return names


def problems(text: str, known: set[str] | frozenset[str]) -> list[tuple[int, str]]:
    """Everything `render` would refuse in `text` given the names in `known`, as
    (line, message) pairs, without values: for checking templates at profile load."""
    out: list[tuple[int, str]] = []
    for statement in JINJA_STATEMENT.finditer(text):
        out.append((line_of(text, statement.start()),
                    f"{statement.group(0)!r}: template statements are not supported "
                    f"(only {{{{ name }}}} placeholders)"))
    pos = 0
    for match in BRACES.finditer(text):
        pos = match.end()
        name = match.group(1).strip()
        line = line_of(text, match.start())
        if not NAME.fullmatch(name):
            out.append((line, f"not a placeholder: {match.group(0)[:40]!r} (only "
                              f"{{{{ name }}}} is supported: no expressions or filters)"))
        elif name not in known:
            out.append((line, f"unknown placeholder {{{{ {name} }}}} (known: "
                              f"{', '.join(sorted(known)) or 'none'})"))
    if "{{" in text[pos:]:
        out.append((line_of(text, pos + text[pos:].index("{{")), "'{{' without a closing '}}'"))
    return sorted(out)


def placeholder_name(text: str, match: re.Match, source: str = "template") -> str:
    name = match.group(1).strip()
    if not NAME.fullmatch(name):
        snippet = match.group(0)[:40]
        raise TemplateError(
            f"{source}:{line_of(text, match.start())}: not a placeholder: {snippet!r} "
            f"(only {{{{ name }}}} is supported: no expressions or filters)")
    return name


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# -- iPXE menus and subscripts (rendered by fleet.boot.menus) ------------------------------

BUILTIN_SUBSCRIPTS = ("install", "local")
MENU_VARIABLES = frozenset({"mac", "hostname", "address", "arch", "deployment", "base_url",
                            "script_url", "sub_url"})
SUBSCRIPT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUB_REF = re.compile(r"\{\{\s*sub_url\s*\}\}/([^\s|;&]*?)\.ipxe")


def check_menu(text: str, subscripts: Iterable[str]) -> list[tuple[int, str]]:
    """(line, message) for everything wrong with a menu or subscript template."""
    out = list(problems(text, MENU_VARIABLES))
    if not text.startswith("#!ipxe"):
        out.append((1, "an iPXE script must start with '#!ipxe'"))
    known = set(subscripts) | set(BUILTIN_SUBSCRIPTS)
    for match in _SUB_REF.finditer(text):
        name = match.group(1)
        start = text.rfind("\n", 0, match.start()) + 1
        if name not in known and not text[start:match.start()].lstrip().startswith("#"):
            line = text.count("\n", 0, match.start()) + 1
            out.append((line, f"chains subscript {name!r}, which is not declared (declared: "
                              f"{', '.join(sorted(known))})"))
    return sorted(out)
