"""The Python API: the audit and predict for a notebook or a script.

    from pytest_gan_privacy import audit
    result = audit("release/generated", "data/train", "data/holdout", features="pixels")
    result.passed, result.verdict, result.f1, result.auc

The options are the command line's, by their Python names (`max_f1=0.5`,
`report="audit.html"`, `groups="groups.csv"`; settings.OPTIONS lists them), checked
before any work. Files are written only when asked (`report=`, `json=`; predict's
`out=`, `scores=`), and a path you name may replace a file there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import AuditInputError
from .files import check_outputs
from .pipeline import run_audit
from .prediction import Prediction, run_predict
from .prediction import write_outputs as write_predictions
from .report import write_outputs
from .result import AuditResult
from .results import result_json
from .runtime import ProgressPrinter
from .settings import OPTIONS, PREDICT_OPTIONS, PREDICT_SHARED, AuditSettings, PredictSettings
from .summary import append_to_job_summary, summary_markdown

PathLike = str | os.PathLike[str]


def audit(
    generated: PathLike,
    used: PathLike,
    not_used: PathLike,
    *,
    progress: bool = False,
    **options: Any,
) -> AuditResult | None:
    """Audit the release: the generated images against the real images the model was
    trained on (`used`) and real images it was not (`not_used`).

    Returns the AuditResult (`.passed`, `.verdict`, `.failures`, `.f1`, `.auc`, ...;
    `result_json(result)` is its JSON). Under torchrun only rank 0 gets it: the other
    ranks return None once their share of the work is done. `progress=True` prints
    progress lines on stderr. Raises AuditInputError for bad input or options.
    """
    _check_names(options, {o.name for o in OPTIONS}, "audit")
    settings = AuditSettings(Path(generated), Path(used), Path(not_used), **options)
    outputs = [p for p in (settings.report, settings.json, settings.summary_md) if p]
    check_outputs([(path, True) for path in outputs], settings.inputs())
    result = run_audit(settings, _progress(progress))
    if result is not None and outputs:
        write_outputs(result, settings.report, settings.json, outputs, settings.summary_md)
    if result is not None:
        report = None if settings.report is None else str(settings.report)
        append_to_job_summary(summary_markdown(result_json(result), report))
    return result


def predict(
    generated: PathLike,
    used: PathLike,
    not_used: PathLike,
    candidates: PathLike,
    *,
    progress: bool = False,
    **options: Any,
) -> Prediction:
    """Which of the unlabelled `candidates` trained the model, from the labelled
    development set (`used`, `not_used`): the ImageCLEFmed GANs task.

    Returns the Prediction (`.rows()`: (file name, call, score) per candidate,
    `.estimate`: the F1 to expect, cross-fitted on the development set). Writes the
    calls to `out=`, the scores to `scores=` and the JSON to `json=` when given.
    """
    own = {o.name for o in PREDICT_OPTIONS} - {"candidates"}
    _check_names(options, set(PREDICT_SHARED) | own, "predict")
    shared = {k: v for k, v in options.items() if k not in own}
    audit_settings = AuditSettings(Path(generated), Path(used), Path(not_used), **shared)
    written = {k: v for k, v in options.items() if k in own}
    settings = PredictSettings(audit_settings, Path(candidates), **written)
    outputs = [settings.out, settings.scores, settings.json]
    check_outputs([(path, True) for path in outputs if path is not None], settings.inputs())
    prediction = run_predict(settings, _progress(progress))
    write_predictions(prediction)
    return prediction


def _check_names(options: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise AuditInputError(
            f"{what}() has no option {', '.join(map(repr, unknown))}: its options are "
            f"{', '.join(sorted(known - set(('generated', 'used', 'not_used'))))}"
        )


def _progress(wanted: bool) -> ProgressPrinter | None:
    return ProgressPrinter(sys.stderr.write, sys.stderr.isatty()) if wanted else None
