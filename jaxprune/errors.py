"""The one error type for bad input.

``UserError`` is raised for anything the user can fix (a missing file, a malformed config, a
target out of range, data too small). The command line prints it as one line and exits 2;
every other exception is a bug and keeps its traceback (exit 1). It subclasses ValueError
so that Python callers catching ValueError keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message is one line that names what is wrong and, where it helps, how
    to fix it."""


class CheckpointError(UserError):
    """A problem with a checkpoint file or directory; the message names the file (and tensor)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception message, for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["CheckpointError", "UserError", "first_line"]
