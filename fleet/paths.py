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


# -- finding a profile (fleet.profile.locate raises the errors; this part is
# light enough for the control socket's client, which loads no profile) -------

PROFILE_SUFFIXES = (".yaml", ".yml")


def bundled_profiles_dir() -> Path:
    """The profiles shipped with fleet (demo.yaml, lab.example.yaml, their
    templates/): the repository's top-level profiles/, which the package reaches
    as fleet/bundled/profiles (a symlink in a checkout, copied into a wheel)."""
    import fleet

    return (Path(fleet.__file__).parent / "bundled" / "profiles").resolve()


def user_profiles_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "profiles"


def find_profile(name_or_path: str | Path) -> tuple[Path | None, list[Path]]:
    """The profile file meant: an existing file is itself; a name (``demo``) is
    ``<name>.yaml`` (or ``.yml``) in the user's profiles, then the bundled ones.
    Returns (the file or None, every place looked at)."""
    given = str(name_or_path)
    path = Path(given).expanduser()
    if path.is_file():
        return path, [path]
    looked: list[Path] = [path]
    if path.is_dir() or not given.strip():
        return None, looked
    if isinstance(name_or_path, str) and "/" not in given and "\\" not in given:
        for directory in (user_profiles_dir(), bundled_profiles_dir()):
            names = [given] if given.endswith(PROFILE_SUFFIXES) else \
                [f"{given}{s}" for s in PROFILE_SUFFIXES]
            for name in names:
                candidate = directory / name
                if candidate.is_file():
                    return candidate, looked + [candidate]
                looked.append(candidate)
    return None, looked
