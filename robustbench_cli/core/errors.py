"""Errors a user can cause, and the exit codes: the contract every command keeps.

The CLI maps a :class:`UserError` to one line on stderr and exit code 2.
"""

import enum


class ExitCode(enum.IntEnum):
    """``robust``'s exit codes, the same for every command."""

    OK = 0  # done; a gate, if any, passed
    GATE_FAILED = 1  # a gate check failed (reserved for gates)
    ERROR = 2  # could not judge: bad usage, unreadable model or data, incomparable reports, internal error
    INTERRUPTED = 130  # Ctrl-C (or SIGTERM): the reports written are partial and marked incomplete


class UserError(Exception):
    """Something the user got wrong (path, shape, epsilon, ...): one clear line, exit 2."""


class DataError(UserError):
    """The evaluation data cannot be read or does not fit the target."""


class TargetError(UserError):
    """The model cannot be loaded or does not behave like a classifier."""


class Notice(UserWarning):
    """Something the user must see but that does not stop the run: the CLI prints it as one ``warning:`` line."""


class TrustWarning(Notice):
    """The user opted out of a safety check (``--trust-checkpoint``)."""
