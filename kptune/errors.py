"""Exception types. Anything a user can cause derives from KptuneError and is
printed by the CLI as one line with exit code 2."""

from __future__ import annotations


class KptuneError(Exception):
    """An error the user can act on; its message is one line."""


class ProblemError(KptuneError, ValueError):
    """A problem description is malformed, impossible or not yet supported."""


class InvalidConfigError(KptuneError, ValueError):
    """A configuration is outside the search space or breaks a constraint."""


class DeviceError(KptuneError):
    """No such device, or its backend is not installed."""


class DatabaseError(KptuneError):
    """The perf db cannot be opened or is from an incompatible kptune."""


class CorpusError(KptuneError, ValueError):
    """A shape-corpus file is missing, malformed or describes an impossible problem; the message names file:line."""
