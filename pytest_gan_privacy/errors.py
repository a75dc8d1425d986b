"""Errors a user can act on.

Anything raised as `AuditInputError` is shown as its message alone (exit status 2
from the command line, a failed audit item under pytest), never as a traceback.
"""


class AuditInputError(Exception):
    """Bad input or settings: the message names the file or folder and the fix."""
