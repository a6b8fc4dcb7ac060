"""Where fleet keeps its files (XDG base directories via platformdirs).

    config  ~/.config/fleet      config.yaml, profiles/, themes/
    data    ~/.local/share/fleet <profile>.db, keys/ (0600 private keys), secrets
    state   ~/.local/state/fleet logs/fleet.log, recordings/ (shell sessions)
    cache   ~/.cache/fleet       artifacts/ (content-addressed build outputs)

The XDG_* environment variables move them, as usual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "fleet"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path
    cache_dir: Path

    @classmethod
    def default(cls) -> "Paths":
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP)),
            data_dir=Path(platformdirs.user_data_dir(APP)),
            state_dir=Path(platformdirs.user_state_dir(APP)),
            cache_dir=Path(platformdirs.user_cache_dir(APP)),
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def user_profiles_dir(self) -> Path:
        return self.config_dir / "profiles"

    @property
    def user_themes_dir(self) -> Path:
        return self.config_dir / "themes"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "fleet.log"

    @property
    def recordings_dir(self) -> Path:
        return self.state_dir / "recordings"

    @property
    def artifacts_dir(self) -> Path:
        return self.cache_dir / "artifacts"

    def default_store(self, profile_name: str) -> Path:
        return self.data_dir / f"{profile_name}.db"

    def secret_file(self, profile_name: str) -> Path:
        return self.data_dir / f"{profile_name}.secret"


def private_dir(path: Path) -> Path:
    """Create a directory only its owner can read."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
