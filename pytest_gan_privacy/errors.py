"""Errors a user can act on.

Anything raised as `AuditInputError` is shown as its message alone (exit status 2
from the command line, a failed audit item under pytest), never as a traceback.
"""


class AuditInputError(Exception):
    """Bad input or settings: the message names the file or folder and the fix."""


def printable(name: object) -> str:
    """A file name as messages and warnings show it: control characters (a newline,
    an ANSI escape, a right-to-left override) written as escapes, so that a hostile name
    cannot forge a line ("PASS: ...") or recolour a CI log."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(name)
    )
