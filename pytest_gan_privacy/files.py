"""Writing files safely: atomic writes, and the checks that an output may go where it
is asked to go.

The report, the JSON result and the feature cache all write through `atomic_write`:
a uniquely named temporary file in the same folder, then a rename, so readers and a
run killed midway see the old file or the new one, never half of one. The report and
the JSON get the permissions any new file of the user's gets (their umask: they are
meant to be shared); cache entries stay private.

`check_outputs` runs before any work: an output is never an input nor inside an input
folder, two outputs are never one file, a folder or a place that cannot be written is
refused, and an existing file is replaced only when this tool wrote it or the user
named that very path.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import AuditInputError
from .settings import OutputKind

ENV_VAR = "GAN_PRIVACY_CACHE_DIR"  # the cache folder, unless --cache-dir names one
GENERATOR = "pytest-gan-privacy"  # written into every report and JSON: how we know ours
# how our own files name us, near their top: the JSON's first key, the report's <meta>
OUR_MARKS = (f'"generator": "{GENERATOR}"', f'<meta name="generator" content="{GENERATOR}"')


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def atomic_write(
    path: Path, content: str | bytes, durable: bool = True, private: bool = False
) -> None:
    """Write `content` (text as UTF-8) to `path` through a temporary file and a rename.
    `durable` also fsyncs before the rename (survives a power cut; cache entries skip
    it, they are checked when read). The file gets the mode of the file it replaces,
    else what the umask gives a new file; `private` keeps it 0600 (cache entries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        mode = 0o600
    else:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:  # mkstemp's
                os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def written_by_us(path: Path) -> bool:
    """Whether the file at `path` is one of our reports or JSON results (it names this
    tool as its generator near its top; a note that merely mentions us is not ours)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return any(mark in head for mark in OUR_MARKS)


def check_replaceable(path: Path, named_by_user: bool) -> None:
    """Refuse to replace a file at a default path that this tool did not write."""
    path = Path(path)
    if named_by_user or not path.exists() or written_by_us(path):
        return
    raise AuditInputError(
        f"{path} exists and was not written by {GENERATOR}; it is left alone. Name that "
        "path explicitly (--report / --json) to replace it, or move it."
    )


def where_written(path: Path) -> Path:
    """Where a write to `path` lands: its folder with links resolved, then its name (a
    rename replaces a link itself, never the file it points to)."""
    path = Path(path)
    return Path(os.path.realpath(path.parent)) / path.name


def _role(name: str) -> str:
    return name.replace("_", " ") if name != "not_used" else "not_used"


def check_apart(path: Path, what: str, inputs: Mapping[str, Path], folder: bool = False) -> None:
    """Refuse an output that is an input or lies inside an input folder (or, for an
    output `folder`, one that holds an input): the audit never writes among the
    images it audits."""
    target = where_written(path) if not folder else Path(os.path.realpath(path))
    for name, given in inputs.items():
        real = Path(os.path.realpath(given))
        source = given if str(given) == str(real) else f"{given} ({real})"
        if target == real:
            raise AuditInputError(
                f"the {what} {path} is the {_role(name)} input {source}: it would be "
                f"overwritten. Give the {what} a path outside the audit's inputs"
            )
        if real in target.parents:
            raise AuditInputError(
                f"the {what} {path} is inside the {_role(name)} folder {source}: the audit "
                f"never writes among its inputs. Give the {what} a path outside them"
            )
        if folder and target in real.parents:
            raise AuditInputError(
                f"the {what} {path} holds the {_role(name)} input {source}: the audit "
                f"would write among its inputs. Give the {what} a folder of its own"
            )


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (links followed)."""
    current = Path(os.path.abspath(path))
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def check_writable_place(path: Path, what: OutputKind | str, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a folder where a
    file is wanted (or a file where a folder is), a read-only file, a folder that
    cannot be made or written in."""
    path = Path(path)
    if os.path.lexists(path):
        if folder:
            if not path.is_dir():
                raise AuditInputError(
                    f"the {what} {path} exists and is not a folder: give a folder"
                )
            return _probe(path, what, path)
        if path.is_dir():
            example = what.example if isinstance(what, OutputKind) else OutputKind.REPORT.example
            raise AuditInputError(
                f"the {what} {path} is a folder: give a file name, e.g. {path / example}"
            )
        if not path.is_file():
            raise AuditInputError(
                f"the {what} {path} exists and is not a regular file (a broken link, a pipe "
                "or a device): give another path"
            )
        if not path.stat().st_mode & 0o222:
            raise AuditInputError(
                f"the {what} {path} is read-only: make it writable, or give another path"
            )
    ancestor = _nearest_existing(path.parent if not folder else path)
    if not ancestor.is_dir():
        raise AuditInputError(
            f"the {what} {path} cannot be written: {ancestor} is a file, not a folder"
        )
    _probe(ancestor, what, path)


def _probe(folder: Path, what: str, path: Path) -> None:
    """Create and remove a file in `folder`: the only test of writability that holds for
    every user (root included) and file system (read-only mounts)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".gan-audit-probe-", dir=folder)
    except OSError as exc:
        raise AuditInputError(
            f"the {what} {path} cannot be written: {folder} is not writable "
            f"({exc.strerror or exc}); give a path in a folder you can write"
        ) from None
    os.close(fd)
    os.unlink(probe)


def default_cache_dir() -> Path:
    """$GAN_PRIVACY_CACHE_DIR, else $XDG_CACHE_HOME/pytest-gan-privacy, else
    ~/.cache/pytest-gan-privacy. RuntimeError when there is no home folder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pytest-gan-privacy"


def cache_folder(settings) -> Path | None:
    """The folder the settings' cache lives in: `cache_dir`, else the default folder
    (see `default_cache_dir`); None with `no_cache` or without a home folder."""
    if settings.no_cache:
        return None
    if settings.cache_dir is not None:
        return Path(settings.cache_dir)
    try:
        return default_cache_dir()
    except RuntimeError:  # Path.home() without a home folder
        return None


def check_cache_folder(folder: Path, inputs: Mapping[str, Path]) -> None:
    """Refuse a cache folder among the inputs (or holding one), or where no folder can
    be. One that cannot be written is no error: a read-only cache (a warm copy mounted
    in CI) still serves reads, and the audit warns that it wrote nothing."""
    folder = Path(folder)
    check_apart(folder, "cache folder", inputs, folder=True)
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise AuditInputError(
            f"the cache folder {folder} cannot be made: {ancestor} is a file, not a folder. "
            "Give another --cache-dir, or --no-cache"
        )


# An output to check: (path or None: not written, whether the user named that very
# path[, what it is]); without what it is, a .json path is the JSON, another the report
OutputSpec = tuple


def check_outputs(outputs: Sequence[OutputSpec], inputs: Mapping[str, Path] | None = None) -> None:
    """Refuse, before any work, outputs that would harm a file or could not be
    written: outputs (path, named by the user[, what]) that are or lie inside an input
    (`inputs`: setting name -> path), two outputs that are one file, a folder, a place
    that cannot be written, or an existing file at a default path that this tool did
    not write. A path of None is not written."""
    seen: dict[Path, OutputKind] = {}
    for spec in outputs:
        path, named = spec[0], spec[1]
        if path is None:
            continue
        path = Path(path)
        what = spec[2] if len(spec) > 2 else OutputKind.from_suffix(path.suffix)
        target = where_written(path)
        if target in seen:
            raise AuditInputError(
                f"the {seen[target]} and the {what} would be the same file {path}: one would "
                "replace the other. Give them different paths (--report, --json; the JSON's "
                "default is the report's path with .json)"
            )
        seen[target] = what
        if inputs:
            check_apart(path, what, inputs)
        check_writable_place(path, what)
        check_replaceable(path, named)
