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


__all__ = ["UserError"]
