"""The groups file: the patient of each real image, for folders whose files do not say
(PNG, JPEG), or to override a DICOM PatientID.

One line "image path,group" per image file, an optional header line "path,group".
Paths are relative to the file's folder (or absolute) and compared after resolving
links. A listed file gives its group to every image it holds.

A group name is a patient identifier (often a medical record number): no message,
JSON or report ever shows one, nor a line of the file. Messages name the line and the
listed path.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .errors import AuditInputError, printable

SHOWN_LINES = 20


@dataclass(frozen=True)
class ImageGroups:
    """A groups file read: the group of each listed image file, and the line that lists it."""

    source: Path
    by_path: Mapping[Path, str] = field(default_factory=dict)
    line_of: Mapping[Path, int] = field(default_factory=dict)

    def group_of(self, path: Path) -> str | None:
        return self.by_path.get(path.resolve())

    def check_inside(self, folders: Mapping[str, Path]) -> None:
        """Every listed file lies in one of the folders it gives patients to (role ->
        folder): a line that points elsewhere (outside them, an absolute path, `..`)
        would be ignored, and the folder's own images would miss their patient unnoticed."""
        roots = [Path(folder).resolve() for folder in folders.values()]
        outside = sorted(
            (line, path)
            for path, line in self.line_of.items()
            if not any(path.is_relative_to(root) for root in roots)
        )
        if outside:
            raise AuditInputError(
                f"the groups file {self.source} lists {len(outside)} file(s) outside the "
                f"{' and '.join(folders)} folders, which it gives patients to; fix their paths "
                f"(relative to {self.source.parent}) or remove those lines:"
                f"\n  {self._lines(outside)}"
            )

    def _lines(self, lines: list[tuple[int, Path]]) -> str:
        """The first listed lines, by number and path (never their group)."""
        base = self.source.parent
        return "\n  ".join(
            f"line {line}: {printable(os.path.relpath(path, base))}"
            for line, path in lines[:SHOWN_LINES]
        )

    def assign(self, role: str, folder: Path, paths: list[Path], groups: list, found) -> None:
        """Give the images of one folder (`paths`, in set order; `groups` updated in
        place) the groups listed for their files, over their own. Stops when the file
        and the folder disagree: a listed file of this folder that is not among its
        image files (`found`: a typo, a stale list), or an image with no group at all
        (it would count as a patient of its own, unnoticed)."""
        real = {Path(path).resolve() for path in found}
        root = Path(folder).resolve()
        missing = sorted(
            (line, path)
            for path, line in self.line_of.items()
            if path.is_relative_to(root) and path not in real
        )
        base = self.source.parent
        if missing:
            raise AuditInputError(
                f"the groups file {self.source} lists {len(missing)} file(s) in the {role} "
                f"folder {folder} that are not there (or are not images); fix their paths "
                f"(relative to {base}) or remove those lines:\n  {self._lines(missing)}"
            )
        for i, path in enumerate(paths):
            groups[i] = self.group_of(path) or groups[i]
        unlisted = sorted({p for p, g in zip(paths, groups, strict=True) if g is None})
        if unlisted:
            shown = "\n  ".join(printable(os.path.relpath(p, base)) for p in unlisted[:SHOWN_LINES])
            raise AuditInputError(
                f"{len(unlisted)} {role} images are not in the groups file {self.source} and "
                f"have no patient of their own: add a line 'path,group' for each (paths "
                f"relative to {base}), e.g.:\n  {shown}"
            )


def groups_of(path: Path | None, folders: Mapping[str, Path]) -> ImageGroups | None:
    """The groups file at `path` (None: none given), read and checked to list only
    files of the folders it gives patients to (role -> folder)."""
    if path is None:
        return None
    groups = read_groups_file(path)
    groups.check_inside(folders)
    return groups


def read_groups_file(path: Path) -> ImageGroups:
    """Parse a groups CSV. Raises AuditInputError naming the line to fix, never its text."""
    path = Path(path)
    if not path.exists():
        raise AuditInputError(
            f"the groups file {path} does not exist: check the path given with --groups"
        )
    if not path.is_file():  # a FIFO would block the read, a device never end
        raise AuditInputError(
            f"the groups file {path} is not a regular file (a folder, a pipe or a device): "
            "give a CSV file with --groups"
        )
    by_path: dict[Path, str] = {}
    line_of: dict[Path, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        why = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise AuditInputError(
            f"the groups file {path} cannot be read ({why}): give a UTF-8 CSV file"
        ) from None
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells] == ["path", "group"]:
            continue
        if len(cells) != 2 or not cells[0]:
            raise AuditInputError(
                f"the groups file {path}, line {number}: expected two cells, 'image path,group', "
                f"found {len(cells)}{' with an empty path' if len(cells) == 2 else ''}"
            )
        if not cells[1]:
            raise AuditInputError(
                f"the groups file {path}, line {number}: the group of {printable(cells[0])} "
                "is empty"
            )
        image = (path.parent / cells[0]).resolve()
        group = f"patient:{cells[1]}"
        if by_path.setdefault(image, group) != group:
            raise AuditInputError(
                f"the groups file {path}, line {number}: {printable(cells[0])} is listed again "
                f"(first on line {line_of[image]}) with another group: keep one"
            )
        line_of.setdefault(image, number)
    if not by_path:
        raise AuditInputError(f"the groups file {path} lists no images ('image path,group')")
    return ImageGroups(path, MappingProxyType(by_path), MappingProxyType(line_of))
