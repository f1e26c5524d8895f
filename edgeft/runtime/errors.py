"""The one error class of edgeft: a problem the user can fix (a missing or damaged file, a bad
setting). Commands print its message and exit non-zero, without a traceback.

It lives in the runtime so that the device-side distribution (edgeft-runtime) has it without the
rest of edgeft; `edgeft.EdgeftError` is the same class."""


class EdgeftError(Exception):
    """An error the user can fix: the CLI prints its message and exits non-zero, no traceback."""
