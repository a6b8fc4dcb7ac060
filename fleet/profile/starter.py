"""A starter profile for the user: a bundled profile, renamed, written into the
user's profiles folder with the templates it refers to.

    written = new_profile("lab")                 # from lab.example.yaml
    written = new_profile("demo", source="demo") # an editable copy of the demo

The copy keeps the source's comments (it is text with its `name:` line
changed, not a YAML round trip). It refuses to overwrite a profile; a template
the folder already has is kept (it may be the user's edit of it).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fleet.errors import BadInput, EnvironmentProblem

from .locate import SUFFIXES, bundled_dir, user_dir
from .values import NAME_RE

SOURCES = {"lab": "lab.example.yaml", "demo": "demo.yaml"}
_NAME_LINE = re.compile(r"^name:[ \t]*[^ \t#\n]+", re.M)


@dataclass
class Written:
    path: Path
    source: Path
    templates: list[Path] = field(default_factory=list)  # copied now
    kept: list[Path] = field(default_factory=list)  # already there, left as they were


def new_profile(name: str, source: str = "lab", folder: Path | None = None) -> Written:
    """Write `<folder>/<name>.yaml` (folder: the user's profiles folder) from the
    bundled profile `source` ("lab" or "demo") and copy its templates/ beside it.
    Raises BadInput for a bad name, an unknown source or an existing profile."""
    if not NAME_RE.fullmatch(name):
        raise BadInput(f"{name!r} is not a profile name: use letters, digits, '.', '_', '-'")
    if source not in SOURCES:
        raise BadInput(f"unknown starter {source!r}; one of: {', '.join(SOURCES)}")
    folder = folder or user_dir()
    for suffix in SUFFIXES:
        existing = folder / f"{name}{suffix}"
        if existing.exists():
            raise BadInput(f"{existing} exists; not overwritten (edit it, or choose another "
                           "name)")
    src = bundled_dir() / SOURCES[source]
    text, found = _NAME_LINE.subn(f"name: {name}", src.read_text(encoding="utf-8"), count=1)
    if not found:  # the bundled profiles all have one; a starter without is a bug
        raise RuntimeError(f"{src}: no `name:` line")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = Written(folder / f"{name}.yaml", src)
        written.templates, written.kept = _copy_templates(bundled_dir() / "templates",
                                                          folder / "templates")
        with open(written.path, "x", encoding="utf-8") as f:  # never over another's file
            f.write(text)
    except FileExistsError:
        raise BadInput(f"{folder / f'{name}.yaml'} exists; not overwritten") from None
    except OSError as err:
        raise EnvironmentProblem(f"cannot write the profile into {folder}: "
                                 f"{err.strerror or err}") from None
    return written


def _copy_templates(src: Path, dest: Path) -> tuple[list[Path], list[Path]]:
    dest.mkdir(exist_ok=True)
    copied, kept = [], []
    for template in sorted(src.iterdir()):
        if not template.is_file():
            continue
        target = dest / template.name
        if target.exists():
            kept.append(target)
            continue
        shutil.copyfile(template, target)
        copied.append(target)
    return copied, kept
