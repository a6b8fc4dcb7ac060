"""Where profiles are found: a path, the bundled profiles, the user's config folder."""

from __future__ import annotations

from pathlib import Path

from fleet.paths import (PROFILE_SUFFIXES, bundled_profiles_dir, find_profile,
                         user_profiles_dir)

from .errors import ProfileFileProblem

SUFFIXES = PROFILE_SUFFIXES


def bundled_dir() -> Path:
    """The profiles shipped with fleet (fleet.paths.bundled_profiles_dir)."""
    return bundled_profiles_dir()


def user_dir() -> Path:
    """``<user config dir>/profiles`` (``~/.config/fleet/profiles`` on Linux; XDG_CONFIG_HOME applies)."""
    return user_profiles_dir()


def search_dirs() -> tuple[Path, ...]:
    """Folders searched for a profile given by name, in order: the user's copy
    of a bundled profile (an edited demo.yaml) wins over the bundled one."""
    return (user_dir(), bundled_dir())


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
    found, looked = find_profile(name_or_path)
    if found is not None:
        return found
    path = Path(given).expanduser()
    if path.is_dir():
        raise ProfileFileProblem(f"{given}: is a directory, not a profile file")
    is_name = isinstance(name_or_path, str) and "/" not in given and "\\" not in given
    places = ", ".join(str(p) for p in looked)
    hint = (f"; `fleet --headless profile new {given}` writes a starter there"
            if is_name and given not in ("demo", "lab.example") else "")
    raise ProfileFileProblem(f"no such profile {given!r} (looked for {places}){hint}")
