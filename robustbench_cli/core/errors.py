"""Errors a user can cause. The CLI maps them to one line on stderr and exit code 2."""


class UserError(Exception):
    """Something the user got wrong (path, shape, epsilon, ...): one clear line, exit 2."""


class DataError(UserError):
    """The evaluation data cannot be read or does not fit the target."""


class TargetError(UserError):
    """The model cannot be loaded or does not behave like a classifier."""


class TrustWarning(UserWarning):
    """The user opted out of a safety check (``--trust-checkpoint``): the CLI prints it as one ``warning:`` line."""
