"""Errors that the CLI turns into a one-line message and exit code 2.

Anything else that escapes a command is a bug and exits with 1 and a traceback.
"""


class UserError(Exception):
    """Bad input or configuration: the user can fix it, so no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A value in params.yaml (or a search-space file) is wrong."""

    def __init__(self, file, key, value, problem):
        self.file, self.key, self.value, self.problem = str(file), key, value, problem
        where = f"{self.file}: {key}" if key else self.file
        shown = "" if value is _MISSING else f" = {value!r}"
        super().__init__(f"{where}{shown}: {problem}")


class DataError(UserError):
    """An input data file is missing, corrupt, unsafe or not what it claims to be."""


_MISSING = object()
MISSING = _MISSING
