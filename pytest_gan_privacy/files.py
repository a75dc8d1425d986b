"""Writing files safely: atomic writes, and the checks that an output may replace what
is at its path.

The report, the JSON result and the feature cache all write through `atomic_write`:
a uniquely named temporary file in the same folder, then a rename, so readers and a
run killed midway see the old file or the new one, never half of one. An output at
a default path replaces only a file this tool wrote; a path the user named is theirs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import AuditInputError

GENERATOR = "pytest-gan-privacy"  # written into every report and JSON: how we know ours


def atomic_write(path: Path, content: str | bytes, durable: bool = True) -> None:
    """Write `content` (text as UTF-8) to `path` through a temporary file and a rename.
    `durable` also fsyncs before the rename (survives a power cut; cache entries skip
    it, they are checked when read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def written_by_us(path: Path) -> bool:
    """Whether the file at `path` names this tool near its top (our reports and JSON do)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return GENERATOR in f.read(4096)
    except OSError:
        return False


def check_replaceable(path: Path, named_by_user: bool) -> None:
    """Refuse to replace a file at a default path that this tool did not write."""
    path = Path(path)
    if named_by_user or not path.exists() or written_by_us(path):
        return
    raise AuditInputError(
        f"{path} exists and was not written by {GENERATOR}; it is left alone. Name that "
        "path explicitly (--report / --json) to replace it, or move it."
    )


def check_outputs(outputs: list[tuple[Path | None, bool]]) -> None:
    """Refuse, before any work, outputs (path, named by the user) that would replace a
    file the user wrote. A path of None is not written."""
    for path, named in outputs:
        if path is not None:
            check_replaceable(path, named)
