"""Errors a user can act on.

Anything raised as `AuditInputError` is shown as its message alone (exit status 2
from the command line, a failed audit item under pytest), never as a traceback.
"""

import re


class AuditInputError(Exception):
    """Bad input or settings: the message names the file or folder and the fix."""


class UnreadableImage(ValueError):
    """A file that cannot give its images; the message says why and the fix, and names
    a header attribute by its name, never by its value (a value may identify a patient)."""


class NotAnImage(Exception):
    """A DICOM object that holds no image to audit (DICOMDIR, SR, RTSTRUCT, SEG ...)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class MissingDecoderError(AuditInputError):
    """Compressed pixels whose decoder is not installed: an installation to fix, so it
    stops the audit even with --skip-bad-images."""


def printable(name: object) -> str:
    """A file name as messages and warnings show it: control characters (a newline,
    an ANSI escape, a right-to-left override) written as escapes, so that a hostile name
    cannot forge a line ("PASS: ...") or recolour a CI log."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(name)
    )


# what a library quotes in its messages is a value it read: a header's text
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'")


def library_detail(exc: BaseException, limit: int = 200) -> str:
    """A reader's or decoder's complaint on one line, cut short, with every quoted value
    left out: pydicom, nibabel and numpy quote the header values they could not use
    ("could not convert string to float: '...'"), and those may identify a patient."""
    text = _QUOTED.sub("'...'", " ".join(str(exc).split())) or type(exc).__name__
    return printable(text if len(text) <= limit else text[: limit - 3] + "...")
