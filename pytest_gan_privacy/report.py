"""Writing the audit's outputs: the HTML report (Jinja2) and the JSON result.

Files are written to a temporary name and renamed, so an interrupted run leaves
the old file or the new one, never half of one. A file at a default path is
replaced only when this tool wrote it; a path the user named is theirs to replace.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .errors import AuditInputError

GENERATOR = "pytest-gan-privacy"


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("the report templates are missing from this installation")


def render_html(result) -> str:
    """The HTML report of an AuditResult."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        # select_autoescape() alone would not escape ".j2" templates
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
    )
    return env.get_template("report.html.j2").render(
        r=result.as_dict(), summary=result.summary(), generator=GENERATOR
    )


def _json_ready(value):
    """NaN and infinity are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_replaceable(path: Path, named_by_user: bool) -> None:
    """Refuse to replace a file at a default path that this tool did not write."""
    path = Path(path)
    if named_by_user or not path.exists():
        return
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        head = ""
    if GENERATOR not in head:
        raise AuditInputError(
            f"{path} exists and was not written by {GENERATOR}; it is left alone. "
            "Name the report's path explicitly (--report / --json) to replace it, or move it."
        )


def check_outputs(html_path: Path | None, json_path: Path | None, named_by_user: bool) -> None:
    """Refuse, before any work, outputs that would replace a file the user wrote."""
    for path in (html_path, json_path):
        if path is not None:
            check_replaceable(path, named_by_user)


def write_outputs(
    result, html_path: Path | None, json_path: Path | None, named_by_user: bool = True
) -> None:
    """Write the HTML report and the JSON result (either may be None: not written)."""
    check_outputs(html_path, json_path, named_by_user)
    if json_path is not None:
        text = json.dumps(_json_ready(result.as_dict()), indent=2, allow_nan=False)
        atomic_write(json_path, text + "\n")
    if html_path is not None:
        atomic_write(html_path, render_html(result))
