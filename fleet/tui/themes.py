"""YAML theme files turned into Textual themes.

Bundled themes live in `fleet/bundled/themes/*.yaml`; the user's in
`~/.config/fleet/themes/*.yaml` (a user file of the same name wins). A file is a
mapping of Textual `Theme` fields plus `variables:` for fleet's own colours
(`state-discovered`, `state-failed`...). A broken file is reported, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from textual.color import Color, ColorParseError
from textual.theme import Theme

import fleet

DEFAULT_THEME = "fleet-dark"
_FIELDS = ("primary", "secondary", "accent", "foreground", "background", "surface",
           "panel", "boost", "success", "warning", "error")

#: Fallback values for the app's variables, so Textual's built-in themes work too.
STATE_VARIABLES = {
    "state-discovered": "#E6C34C", "state-leased": "#7E9CD8",
    "state-provisioning": "#4EA1D3", "state-provisioned": "#8FBF6A",
    "state-wiping": "#C792EA", "state-failed": "bold #E0605E",
    "state-stalled": "#E69A4C", "state-queued": "#8C96A5", "state-running": "#4EA1D3",
    "state-succeeded": "#8FBF6A", "state-cancelled": "#8C96A5",
    "state-interrupted": "#E69A4C", "state-reachable": "#8FBF6A",
    "state-unreachable": "#E0605E", "state-booting": "#4EA1D3", "state-unknown": "#8C96A5",
    "state-on": "#8FBF6A", "state-off": "#8C96A5",
}


def bundled_dir() -> Path:
    return Path(fleet.__file__).resolve().parent / "bundled" / "themes"


class ThemeFileError(ValueError):
    pass


def load_theme_file(path: Path) -> Theme:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ThemeFileError(f"{path}: cannot read: {err}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ThemeFileError(f"{path}: expected a mapping of theme fields")
    name = data.get("name") or path.stem
    if not data.get("primary"):
        raise ThemeFileError(f"{path}: 'primary' is required")
    kwargs = {}
    for key in _FIELDS:
        if data.get(key) is not None:
            value = str(data[key])
            try:
                Color.parse(value)
            except ColorParseError:
                raise ThemeFileError(f"{path}: {key}: not a colour: {value!r}") from None
            kwargs[key] = value
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{path}: 'variables' must be a mapping")
    return Theme(name=str(name), dark=bool(data.get("dark", True)),
                 variables={str(k): str(v) for k, v in variables.items()}, **kwargs)


@dataclass
class ThemeSet:
    themes: dict[str, Theme] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def load_themes(*folders: Path) -> ThemeSet:
    out = ThemeSet()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.y*ml")):
            try:
                theme = load_theme_file(path)
            except ThemeFileError as err:
                out.errors.append(str(err))
                continue
            out.themes[theme.name] = theme
    return out
