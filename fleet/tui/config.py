"""The console's user settings: `~/.config/fleet/config.yaml`.

    theme: fleet-light            # default theme (--theme and FLEET_THEME win)
    keymap:                       # binding id -> keys (see `?` for the ids)
      verb.lease: ctrl+l
      app.quit: ctrl+q
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class ConsoleConfig:
    theme: str | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def load_config(path: Path) -> ConsoleConfig:
    if not path.is_file():
        return ConsoleConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        return ConsoleConfig(errors=[f"{path}: {err}".replace("\n", " ")])
    if not isinstance(data, dict):
        return ConsoleConfig(errors=[f"{path}: expected a mapping"])
    cfg = ConsoleConfig()
    if data.get("theme") is not None:
        cfg.theme = str(data["theme"])
    keymap = data.get("keymap") or {}
    if isinstance(keymap, dict):
        cfg.keymap = {str(k): str(v) for k, v in keymap.items()}
    else:
        cfg.errors.append(f"{path}: keymap must be a mapping of binding id to keys")
    return cfg
