"""Profile problems: one `ProfileIssue` per thing wrong, all of them in one `ProfileError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from fleet.errors import BadInput


@dataclass(frozen=True, order=True)
class ProfileIssue:
    """One problem in a profile file.

    `line` is 1-based; 0 means "no line" (the file could not be read at all).
    `key` is the dotted path of the offending key, e.g. ``jumps[1].via``;
    empty when the problem is the file as a whole.
    """

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class ProfileError(BadInput):
    """An invalid or missing profile (exit code 2, as all bad input). ``str(err)``
    is one FILE:LINE line per issue: the faces print it as it is, without the
    `fleet: ` prefix of other errors."""

    def __init__(self, issues: Iterable[ProfileIssue]):
        self.issues: list[ProfileIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @classmethod
    def single(cls, file: str, message: str, *, line: int = 0, key: str = "") -> "ProfileError":
        return cls([ProfileIssue(str(file), line, key, message)])

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


class ProfileFileProblem(ProfileError):
    """The profile file itself cannot be had (no such name or path, a
    directory): there is nothing to point into, so it reads like any other
    error, one `fleet: ...` line."""

    def __init__(self, message: str):
        super().__init__([ProfileIssue("", 0, "", message)])
        self.args = (str(self),)

    def __str__(self) -> str:
        return f"fleet: {self.issues[0].message}"


class ProfileUnreadable(ProfileFileProblem):
    """The file is there but cannot be read (no permission, an I/O error): the
    environment's problem, exit 3."""

    exit_code = 3
