"""Where profiles are found: a path, the bundled profiles, the user's config folder."""

from __future__ import annotations

from pathlib import Path

import platformdirs

import fleet

from .errors import ProfileFileProblem

SUFFIXES = (".yaml", ".yml")


def bundled_dir() -> Path:
    """The profiles shipped with fleet (demo.yaml, lab.example.yaml, their
    templates/): the repository's top-level profiles/, which the package reaches
    as fleet/bundled/profiles (a symlink in a checkout, copied into a wheel)."""
    return (Path(fleet.__file__).parent / "bundled" / "profiles").resolve()


def user_dir() -> Path:
    """``<user config dir>/profiles`` (``~/.config/fleet/profiles`` on Linux; XDG_CONFIG_HOME applies)."""
    return Path(platformdirs.user_config_dir("fleet")) / "profiles"


def search_dirs() -> tuple[Path, ...]:
    """Folders searched for a profile given by name, in order: the user's copy
    of a bundled profile (an edited demo.yaml) wins over the bundled one."""
    return (user_dir(), bundled_dir())


def _candidates(directory: Path, name: str) -> list[Path]:
    if name.endswith(SUFFIXES):
        return [directory / name]
    return [directory / f"{name}{s}" for s in SUFFIXES]


def resolve_profile(name_or_path: str | Path) -> Path:
    """Find a profile file.

    An existing file is itself. A name (``demo``, ``lab.example``) is looked
    up as ``<name>.yaml`` (or ``.yml``) in the user's config folder, then in
    the bundled profiles. Anything else raises ProfileFileProblem (`fleet: ...`)
    naming every place looked at.
    """
    given = str(name_or_path)
    if not given.strip():
        raise ProfileFileProblem("no profile given (--profile NAME|PATH)")
    path = Path(given).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ProfileFileProblem(f"{given}: is a directory, not a profile file")
    looked: list[Path] = [path]
    is_name = isinstance(name_or_path, str) and "/" not in given and "\\" not in given
    if is_name:
        for directory in search_dirs():
            for candidate in _candidates(directory, given):
                if candidate.is_file():
                    return candidate
                looked.append(candidate)
    places = ", ".join(str(p) for p in looked)
    hint = (f"; `fleet --headless profile new {given}` writes a starter there"
            if is_name and given not in ("demo", "lab.example") else "")
    raise ProfileFileProblem(f"no such profile {given!r} (looked for {places}){hint}")
