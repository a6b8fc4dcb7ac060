"""Profiles: one YAML file describing operator, jumps, sites, deployments and nodes.

    from fleet.profile import load_profile, resolve_profile, ProfileError, Profile

    profile = load_profile("demo")          # a name or a path; raises ProfileError

Every problem in a file is collected and reported as ``FILE:LINE: key: message``
(``str(ProfileError)``, one line per issue). No Textual here, no I/O beyond
reading the file (and checking that referenced templates exist).
"""

from __future__ import annotations

from pathlib import Path

from .errors import ProfileError, ProfileFileProblem, ProfileIssue, ProfileUnreadable
from .locate import bundled_dir, resolve_profile, search_dirs, user_dir
from fleet.core.config import (
    DemoConfig,
    DeploymentConfig,
    DistributorConfig,
    FrozenDict,
    JumpConfig,
    NodeConfig,
    OperatorConfig,
    Ports,
    Profile,
    SiteConfig,
    SshSettings,
)
from .validate import SUPPORTED_VERSIONS, parse_profile
from .values import parse_mac

__all__ = [
    "DemoConfig",
    "DeploymentConfig",
    "DistributorConfig",
    "FrozenDict",
    "JumpConfig",
    "NodeConfig",
    "OperatorConfig",
    "Ports",
    "Profile",
    "ProfileError",
    "ProfileFileProblem",
    "ProfileIssue",
    "ProfileUnreadable",
    "SUPPORTED_VERSIONS",
    "SiteConfig",
    "SshSettings",
    "bundled_dir",
    "load_profile",
    "parse_mac",
    "parse_profile",
    "resolve_profile",
    "search_dirs",
    "user_dir",
]


def load_profile(path_or_name: str | Path) -> Profile:
    """Read and validate a profile (a path, or a name `resolve_profile` finds).

    Raises ProfileError with every problem found; never another exception for
    a bad file.
    """
    path = resolve_profile(path_or_name)
    file = str(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ProfileFileProblem(f"{file}: is a directory, not a profile file") from None
    except OSError as exc:
        raise ProfileUnreadable(f"cannot read profile {file}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProfileError.single(file, "not UTF-8 text", line=line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_profile(text, path, file=file)
