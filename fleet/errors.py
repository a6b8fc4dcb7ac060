"""Errors that reach the operator, each with the exit code the headless contract
documents: 2 bad input (usage, profile, unknown MAC/node), 3 environment
(missing tool, port in use, no permission).

Elsewhere in the family: fleet.profile.ProfileError (BadInput, one FILE:LINE
line per issue), fleet.access.pool.AccessError and its kinds, JobFailed,
BuildFailed."""

from __future__ import annotations


class FleetError(Exception):
    exit_code = 1


class BadInput(FleetError):
    exit_code = 2


class UnknownTarget(BadInput):
    """An unknown MAC, node, job, deployment..."""


class Conflict(BadInput):
    """The target's state forbids the change (a machine already leased...)."""


class ReadOnly(BadInput):
    """A change asked of an engine opened with --read-only."""


class EnvironmentProblem(FleetError):
    exit_code = 3

