"""Writing the audit's outputs: the HTML report (Jinja2) and the JSON result.

The report is one self-contained file: CSS inline, charts as inline SVG (charts.py),
thumbnails as data: URIs, and no request of any kind when it is opened. It is drawn
from the same dict as the JSON (embedded in it, too), so the two carry the same
numbers. By default it holds no pixels of real images (patient data): real
candidates appear as IDs and short hashes, and only generated images as thumbnails.

Files are written to a temporary name and renamed, so an interrupted run leaves
the old file or the new one, never half of one. A file at a default path is
replaced only when this tool wrote it; a path the user named is theirs to replace.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import AuditInputError

GENERATOR = "pytest-gan-privacy"
RISKIEST = 10  # candidates shown with their nearest generated images
NEAR_COPIES_SHOWN = 20  # near-copy pairs shown with thumbnails (all are in the JSON)
THUMBNAIL_PX = 64


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("the report templates are missing from this installation")


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX) -> str:
    """A small grey PNG of an image as a data: URI (decoded like the audit decodes it)."""
    import numpy as np
    from PIL import Image

    from .images import decode_image

    pixels = decode_image(Path(path).read_bytes(), size, 1)[0].numpy()
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8), mode="L").save(
        buffer, "PNG", optimize=True
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _charts(data: dict) -> dict[str, str]:
    """The report's SVG charts, drawn from the JSON data."""
    from .charts import attack_f1_svg, roc_curve_svg, score_histogram_svg

    rows, attacks = data["candidates"], data["attacks"]
    labels = [int(row["label"] == "used") for row in rows]
    c = data["confusion"]
    operating_point = (c["fp"] / max(c["fp"] + c["tn"], 1), c["tp"] / max(c["tp"] + c["fn"], 1))
    return {
        "attacks": attack_f1_svg(attacks, data["max_f1"], data["gating_attack"], data["chance_f1"]),
        "roc": roc_curve_svg(
            labels,
            {name: [row["attack_scores"][name] for row in rows] for name in attacks},
            {name: a["auc"] for name, a in attacks.items()},
            operating_point,
        ),
        "scores": score_histogram_svg(
            [row["score"] for row in rows if row["label"] == "used"],
            [row["score"] for row in rows if row["label"] != "used"],
            attacks[data["gating_attack"]]["thresholds"],
        ),
    }


def render_html(result) -> str:
    """The HTML report of an AuditResult."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        # select_autoescape() alone would not escape ".j2" templates
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    data = _json_ready(result.as_dict())
    rows = data["candidates"]
    # indices of the highest scores; ties stay in content-hash order
    riskiest = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])[:RISKIEST]
    generated = dict(zip(result.generated.ids, result.generated.paths, strict=True))
    shown = {n["id"] for i in riskiest for n in rows[i]["nearest_generated"]}
    near_copies = (data["near_copies"] or {"pairs": []})["pairs"][:NEAR_COPIES_SHOWN]
    shown |= {pair["generated"] for pair in near_copies}
    thumbnails = {g: thumbnail_uri(generated[g]) for g in sorted(shown)}
    real_thumbnails = {}
    if result.settings.report_real_thumbnails:
        real = result.candidates.members.paths + result.candidates.non_members.paths
        real_thumbnails = {rows[i]["id"]: thumbnail_uri(real[i]) for i in riskiest}
    return env.get_template("report.html.j2").render(
        r=data,
        summary=result.summary(),
        generator=GENERATOR,
        charts=_charts(data),
        riskiest=riskiest,
        near_copies=near_copies,
        thumbnails=thumbnails,
        real_thumbnails=real_thumbnails,
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


def atomic_write(path: Path, content: str | bytes, durable: bool = True) -> None:
    """Write `content` (text as UTF-8) to `path` through a uniquely named temporary
    file in the same folder and a rename: readers, and a run killed midway, see the
    old file or the new one. `durable` also fsyncs before the rename (survives a power
    cut; cache entries skip it, they are checked when read)."""
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


def render_outputs(result, html_path: Path | None, json_path: Path | None) -> list[tuple[str, str]]:
    """(path, text) of the JSON result and the HTML report (either path may be None:
    not rendered). Plain strings, so a pytest-xdist worker can hand them over."""
    files = []
    if json_path is not None:
        text = json.dumps(_json_ready(result.as_dict()), indent=2, allow_nan=False)
        files.append((str(json_path), text + "\n"))
    if html_path is not None:
        files.append((str(html_path), render_html(result)))
    return files


def write_files(files: list[tuple[str, str]], named_by_user: bool) -> None:
    """Write rendered outputs, each atomically, after checking that none replaces a
    file the user wrote."""
    for path, _text in files:
        check_replaceable(Path(path), named_by_user)
    for path, text in files:
        atomic_write(Path(path), text)


def write_outputs(
    result, html_path: Path | None, json_path: Path | None, named_by_user: bool = True
) -> None:
    """Write the HTML report and the JSON result (either may be None: not written)."""
    check_outputs(html_path, json_path, named_by_user)
    write_files(render_outputs(result, html_path, json_path), named_by_user)
