"""Writing the audit's outputs: the HTML report (Jinja2) and the JSON result.

The report is one self-contained file: CSS inline, charts as inline SVG (charts.py),
thumbnails as data: URIs, and no request of any kind when it is opened. It is drawn
from the same dict as the JSON (embedded in it, too), so the two carry the same
numbers. By default it holds no pixels of real images (patient data): real
candidates appear as IDs and short hashes, and only generated images as thumbnails.

Files are written through files.atomic_write (an interrupted run leaves the old
file or the new one) and checked by files.check_outputs (a file at a default path is
replaced only when this tool wrote it; a path the user named is theirs to replace).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Collection, Mapping
from pathlib import Path

from .files import GENERATOR, atomic_write, check_outputs
from .metrics import LOW_FPRS
from .result import AuditResult

RISKIEST = 10  # candidates shown with their nearest generated images
NEAR_COPIES_SHOWN = 20  # near-copy pairs shown with thumbnails (all are in the JSON)
EXPOSED_SHOWN = 20  # exposed members shown with their nearest generated images
THUMBNAIL_PX = 64


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("the report templates are missing from this installation")


def thumbnail_uri(source, size: int = THUMBNAIL_PX) -> str:
    """A small grey PNG of an image as a data: URI (decoded like the audit decodes it):
    `source` is an image file's path, or a medical.FrameRef (a DICOM frame, a NIfTI
    slice: ImageSet.sources)."""
    import numpy as np
    from PIL import Image

    from .images import decode_image
    from .medical import FrameRef

    data = source if isinstance(source, FrameRef) else Path(source).read_bytes()
    pixels = decode_image(data, size, 1)[0].numpy()
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
    """The HTML report of an AuditResult, drawn from its JSON (results.result_json)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from .results import result_json, summary_line

    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        # select_autoescape() alone would not escape ".j2" templates
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    data = result_json(result)
    rows = data["candidates"]
    # indices of the highest scores; ties stay in content-hash order
    riskiest_first = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])
    riskiest = riskiest_first[:RISKIEST]
    generated = dict(zip(result.generated.ids, result.generated.sources, strict=True))
    shown = {n["id"] for i in riskiest for n in rows[i]["nearest_generated"]}
    near_copies = (data["near_copies"] or {"pairs": []})["pairs"][:NEAR_COPIES_SHOWN]
    shown |= {pair["generated"] for pair in near_copies}
    ex = data["exposure"] or {"exposed": []}
    exposed_ids = set(ex.get("exposed_images", ex["exposed"]))  # per patient: their images
    exposed = [i for i in riskiest_first if rows[i]["id"] in exposed_ids][:EXPOSED_SHOWN]
    shown |= {n["id"] for i in exposed for n in rows[i]["nearest_generated"]}
    thumbnails = {g: thumbnail_uri(generated[g]) for g in sorted(shown)}
    real_thumbnails = {}
    if result.settings.report_real_thumbnails:
        real = result.candidates.members.sources + result.candidates.non_members.sources
        real_thumbnails = {rows[i]["id"]: thumbnail_uri(real[i]) for i in riskiest}
    return env.get_template("report.html.j2").render(
        r=data,
        summary=summary_line(result),
        generator=GENERATOR,
        charts=_charts(data),
        riskiest=riskiest,
        near_copies=near_copies,
        exposed=exposed,
        thumbnails=thumbnails,
        real_thumbnails=real_thumbnails,
        # TPR at each low FPR needs at least 1 / FPR non-members (metrics.tpr_at_fpr)
        min_non_members=[round(1 / fpr) for fpr in LOW_FPRS],
    )


# An output to write: (path, text, whether the user named that very path).
Output = tuple[str, str, bool]


def render_outputs(
    result: AuditResult,
    html_path: Path | None,
    json_path: Path | None,
    named: Collection[Path] = (),
    summary_path: Path | None = None,
) -> list[Output]:
    """The JSON result, the HTML report and the Markdown summary, rendered (a path of
    None: not rendered); `named`: the paths the user named, which may replace any file.
    Plain strings, so a pytest-xdist worker can hand them over."""
    from .results import result_json
    from .summary import summary_markdown

    named_paths = {str(p) for p in named}
    files = []
    data = result_json(result)
    if json_path is not None:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        files.append((str(json_path), text, str(json_path) in named_paths))
    if html_path is not None:
        files.append((str(html_path), render_html(result), str(html_path) in named_paths))
    if summary_path is not None:
        text = summary_markdown(data, None if html_path is None else str(html_path))
        files.append((str(summary_path), text, str(summary_path) in named_paths))
    return files


def write_files(files: list[Output], inputs: Mapping[str, Path] | None = None) -> None:
    """Write rendered outputs, each atomically, after checking that none replaces a
    file the user wrote, lands among the `inputs` (setting -> path) or cannot be written."""
    check_outputs([(Path(path), named) for path, _text, named in files], inputs)
    for path, text, _named in files:
        atomic_write(Path(path), text)


def write_outputs(
    result: AuditResult,
    html_path: Path | None,
    json_path: Path | None,
    named: Collection[Path] | None = None,
    summary_path: Path | None = None,
) -> None:
    """Write the HTML report, the JSON result and the Markdown summary (a path of None:
    not written). `named`: the paths the user named (default: all, as a caller that
    passes paths)."""
    paths = (html_path, json_path, summary_path)
    named = [p for p in paths if p is not None] if named is None else named
    files = render_outputs(result, html_path, json_path, named, summary_path)
    write_files(files, result.settings.inputs())
