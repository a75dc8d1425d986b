"""Which unlabelled real images trained the model (`gan-privacy predict`, the
ImageCLEFmed GANs task): calls per image from a labelled development set.

The pipeline is the audit's (audit.score_candidates): every attack scores the
development images (used, not_used) and the unlabelled candidates together, from the
generated images alone, labels-blind. Labels then choose, on the development set only:
1. the estimate: each development fold is called by the attack with the best AUC on
   the other folds and the transfer rule fitted there (cross-fitting, as in
   gate.best_per_fold): the F1 to expect, with its interval and chance level;
2. the calls: the attack with the best AUC on the whole development set and the same
   rule, fitted on all of it, applied to the unlabelled images.

The transfer rule is a score threshold: the development set's prevalence threshold
(metrics.prevalence_threshold: the level that calls its member fraction used) on the
chosen attack's score, applied to the candidates' scores as it is. It transfers here,
unlike the seed's threshold (development F1 0.726, test 0.603), because the
development images and the candidates are scored in one pass against the same
generated images, so one score means the same in both. Measured on 100 random half
splits of each brainmri64 scenario (benchmarks/predict.py, README "The ImageCLEF
task"): with the development set's member fraction among the candidates it ties the
rank rule that calls that fraction used (F1 within 0.006 on every scenario); with a
third of the candidates members instead of half it keeps its F1 where the signal is
strong (copies 1.000, vae-100 0.938) and the rank rule does not (0.800, 0.794), as it
must call half of them used. The seed's max-F1 threshold gets F1 0.66 with no signal
at all (it calls almost every image used: chance is 2/3) and is not used.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sklearn.metrics import roc_auc_score

from .cache import open_cache
from .distributed import SINGLE
from .errors import printable
from .features import Encoding
from .files import GENERATOR, atomic_write
from .images import ImageSet
from .loading import load_release
from .metrics import (
    FoldCall,
    FoldRule,
    MembershipMetrics,
    column_ranks,
    cross_fit,
    max_f1_threshold,
    prevalence_threshold,
)
from .orientation import orientation_warning
from .patients import candidate_patients
from .pipeline import check_before_work, versions
from .result import Candidates
from .runtime import Progress, Stopwatch, cpu_threads, no_progress, resolve_device
from .scoring import score_release
from .settings import PredictSettings, check_predict_paths

# A rule fitted on labelled scores and applied to other scores: (train scores, train
# labels, test scores) -> calls (True: used).
TransferRule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def prevalence_calls(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Call used the top fraction of `test` that `labels` has members (ties broken by
    position: content order, never names)."""
    n_called = int(round(labels.mean() * len(test)))
    calls = np.zeros(len(test), bool)
    calls[np.argsort(-test, kind="stable")[:n_called]] = True
    return calls


def threshold_calls(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The development set's prevalence threshold, as a score, applied to `test`."""
    return test >= prevalence_threshold(train, labels)


def max_f1_calls(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The score threshold that maximises F1 on the development set (the seed's)."""
    return test >= max_f1_threshold(train, labels)


# The rules benchmarks/predict.py compares; RULE is the one predict uses (the module's
# docstring says why: it ties the rank rule when the candidates have the development
# set's member fraction and keeps its F1 when they have another; max-F1's F1 is chance).
TRANSFER_RULES: dict[str, TransferRule] = {
    "prevalence": prevalence_calls,
    "score threshold": threshold_calls,
    "max-f1 threshold": max_f1_calls,
}
RULE = "score threshold"


def best_attack(columns: np.ndarray, labels: np.ndarray) -> int:
    """The column with the best AUC on these labelled scores (first of equals)."""
    return int(np.argmax([roc_auc_score(labels, c) for c in np.asarray(columns).T]))


def transfer_rule(rule: TransferRule) -> FoldRule:
    """The fold's attack, the best AUC on the other folds, and `rule` fitted there."""

    def fold_rule(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> FoldCall:
        best = best_attack(train, labels)
        return FoldCall(rule(train[:, best], labels, test[:, best]), best)

    return fold_rule


def cross_fitted_estimate(
    columns: np.ndarray,
    labels: np.ndarray,
    rule: TransferRule,
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 1000,
    groups: np.ndarray | None = None,
) -> MembershipMetrics:
    """What to expect of the calls: each fold of the development set is called as the
    unlabelled images will be, by the attack chosen on the other folds and `rule`
    fitted there. `columns` (C, A): every attack's development scores. The AUC is of
    the chosen attacks' ranks over the development set (comparable across folds).
    `groups` (the patient of each image): folds and interval by patient, as the audit's."""
    columns = np.asarray(columns, float)
    ranks = column_ranks(columns)
    return cross_fit(
        columns, labels, transfer_rule(rule), folds, seed, bootstrap, groups, scores=ranks
    )


@dataclass(repr=False)
class Prediction:
    """The calls for the unlabelled candidates, and what the development set says to
    expect of them."""

    settings: PredictSettings
    generated: ImageSet
    development: Candidates
    candidates: ImageSet  # the unlabelled images, content order (copies left out)
    attack_names: list[str]
    development_scores: np.ndarray  # (development, attacks)
    candidate_scores: np.ndarray  # (candidates, attacks)
    attack: str  # the attack the calls use
    calls: np.ndarray  # per candidate, True: used
    estimate: MembershipMetrics  # cross-fitted on the development set
    rule: str = RULE
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def scores(self) -> np.ndarray:
        """The candidates' scores by the chosen attack (higher: more likely used)."""
        return self.candidate_scores[:, self.attack_names.index(self.attack)]

    @property
    def member_fraction(self) -> float:
        return float(self.development.labels.mean())

    @property
    def predicted_fraction(self) -> float:
        """The fraction of candidate files called used (copies included)."""
        rows = self.rows()
        return sum(call for _, call, _ in rows) / max(len(rows), 1)

    def rows(self) -> list[tuple[str, int, float]]:
        """(file name, call, score) per candidate file, sorted by name; a copy of a
        candidate (left out of the scoring) gets its twin's call and score."""
        ids = self.candidates.ids
        by_id = {
            i: (int(c), float(s)) for i, c, s in zip(ids, self.calls, self.scores, strict=True)
        }
        twin = dict(self.candidates.duplicates)
        for copy in twin:
            kept = copy
            while kept not in by_id:  # a copy of a file whose pixels another one has
                kept = twin[kept]
            by_id[copy] = by_id[kept]
        return sorted((name, call, score) for name, (call, score) in by_id.items())

    def as_dict(self) -> dict:
        """The JSON result: the development estimate, the chosen attack and the calls'
        summary (the calls themselves are in the CSV)."""
        m = self.estimate
        dev = self.development
        chosen_names = [self.attack_names[i] for i in m.chosen]
        dev_aucs = {
            name: float(roc_auc_score(dev.labels, self.development_scores[:, a]))
            for a, name in enumerate(self.attack_names)
        }
        rows = self.rows()
        return {
            "generator": GENERATOR,
            "command": "predict",
            "created": self.created,
            "versions": self.versions,
            "settings": self.settings.as_dict(),
            "rule": self.rule,
            "attack": self.attack,
            "development": {
                "used": len(dev.members),
                "not_used": len(dev.non_members),
                "member_fraction": self.member_fraction,
                "estimate": {**m.as_dict(), "chosen_attacks": chosen_names},
                "attack_auc": dev_aucs,
                "manifest_sha256": {
                    "used": dev.members.manifest_sha256(),
                    "not_used": dev.non_members.manifest_sha256(),
                },
            },
            "candidates": {
                "files": len(rows),
                "scored": len(self.candidates),
                "copies": len(self.candidates.duplicates),
                "predicted_used": sum(call for _, call, _ in rows),
                "predicted_fraction": self.predicted_fraction,
                "skipped": sorted(str(p) for p in self.candidates.skipped),
                "left_out": [
                    {"image": item.image, "why": item.why, "detail": item.detail}
                    for item in self.candidates.every_left_out()
                ],
                "manifest_sha256": self.candidates.manifest_sha256(),
            },
            "generated": len(self.generated),
            "device": self.device,
            "timings": self.timings,
            "warnings": self.warnings,
        }


def predictions_csv(rows: list[tuple[str, int, float]]) -> str:
    """'<file name>,<1|0>' lines, the ImageCLEFmed GANs submission format."""
    return _csv([(name, call) for name, call, _ in rows])


def scores_csv(rows: list[tuple[str, int, float]]) -> str:
    """'<file name>,<score>' lines (higher: more likely used)."""
    return _csv([(name, f"{score:.6g}") for name, _, score in rows])


def _csv(rows: list[tuple]) -> str:
    """RFC 4180 CSV: CRLF line ends, so that a name holding a line break of either kind
    is quoted and reads back whole."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def write_outputs(prediction: Prediction) -> None:
    """The calls, and the scores and the JSON where asked (paths checked before the
    work: cli.predict, files.check_outputs)."""
    rows = prediction.rows()
    settings = prediction.settings
    if settings.out is not None:
        atomic_write(settings.out, predictions_csv(rows))
    if settings.scores is not None:
        atomic_write(settings.scores, scores_csv(rows))
    if settings.json is not None:
        atomic_write(settings.json, json.dumps(prediction.as_dict(), indent=2) + "\n")


def summary_lines(prediction: Prediction) -> list[str]:
    """What the terminal shows: the estimate, the attack and the calls."""
    from .results import interval_text

    m, rows = prediction.estimate, prediction.rows()
    called = sum(call for _, call, _ in rows)
    dev = prediction.development
    return [
        f"predicted used: {called} of {len(rows)} candidates ({called / max(len(rows), 1):.1%}; "
        f"the development set has {prediction.member_fraction:.1%} members)",
        f"  expected F1 {m.f1:.3f} ({interval_text(m.f1_ci)}, chance {m.chance_f1:.3f}), "
        f"AUC {m.auc:.3f}: cross-fitted on the development set ({len(dev.members)} used, "
        f"{len(dev.non_members)} not_used)",
        f"  attack: {prediction.attack}; rule: {prediction.rule} "
        f"({prediction.timings.get('total', 0.0):.1f} s)",
    ]


# --- the pipeline --------------------------------------------------------------------


def run_predict(settings: PredictSettings, progress: Progress | None = None) -> Prediction:
    """Score, choose on the development set, call the candidates; writes nothing but
    cache entries (write_outputs writes the files). AuditInputError for bad input."""
    check_predict_paths(settings)
    check_before_work(settings.audit)
    with cpu_threads():
        return _predict(settings, progress or no_progress)


def _predict(settings: PredictSettings, progress: Progress) -> Prediction:
    audit = settings.audit
    clock = Stopwatch()
    cache = open_cache(audit)
    encoding = Encoding(
        resolve_device(audit.device), audit.batch_size, audit.workers, progress, cache
    )
    # load and orient: the audit's rules for the development set, the candidates beside it
    release = load_release(audit, settings.candidates)
    clock.lap("load")
    # score every image at once, labels-blind (the audit's fit ... scan)
    scores = score_release(audit, release, encoding, SINGLE, clock)
    assert scores is not None  # one process
    names = [a.name for a in scores.attacks]
    columns = np.column_stack([a.scores for a in scores.attacks])
    development, candidates = release.candidates, release.pools[2]
    dev_columns, cand_columns = columns[: len(development)], columns[len(development) :]
    # choose on the development set only, then call the candidates
    labels = development.labels
    patients = candidate_patients(development.groups, development.hashes, labels)
    rule = TRANSFER_RULES[RULE]
    estimate = cross_fitted_estimate(
        dev_columns,
        labels,
        rule,
        audit.folds,
        audit.seed,
        audit.bootstrap,
        None if patients is None else patients.index,
    )
    best = best_attack(dev_columns, labels)
    calls = rule(dev_columns[:, best], labels, cand_columns[:, best])
    clock.lap("choose and call")
    prediction = Prediction(
        settings=settings,
        generated=release.generated,
        development=development,
        candidates=candidates,
        attack_names=names,
        development_scores=dev_columns,
        candidate_scores=cand_columns,
        attack=names[best],
        calls=calls,
        estimate=estimate,
        device=str(encoding.device),
        timings=clock.total(),
        versions=versions(),
    )
    oriented = release.orientation
    prediction.warnings = (
        ([orientation_warning(oriented)] if oriented.turned else [])
        + predict_warnings(prediction)
        + ([] if cache is None else cache.warnings)
    )
    return prediction


MIN_DEVELOPMENT_PER_CLASS = 20  # as caveats.MIN_CANDIDATES_PER_CLASS
# what a spreadsheet takes for the start of a formula (OWASP's CSV injection list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def predict_warnings(prediction: Prediction) -> list[str]:
    """What a reader must know before trusting the calls."""
    out = []
    dev = prediction.development
    n_m, n_n = len(dev.members), len(dev.non_members)
    if min(n_m, n_n) < MIN_DEVELOPMENT_PER_CLASS:
        out.append(
            f"a small development set: {n_m} used and {n_n} not_used (fewer than "
            f"{MIN_DEVELOPMENT_PER_CLASS} per class); the estimate's interval is wide and the "
            "attack chosen may not be the best one"
        )
    m = prediction.estimate
    if m.f1_ci is not None and m.f1_ci[0] <= m.chance_f1:
        out.append(
            f"the expected F1's interval ({m.f1_ci[0]:.3f}-{m.f1_ci[1]:.3f}) reaches its "
            f"chance level {m.chance_f1:.3f}: the calls may be no better than a guess"
        )
    known = {g for g in dev.groups if g is not None}
    shared = sum(g is not None and g in known for g in prediction.candidates.groups)
    if shared:
        out.append(
            f"{shared} candidate(s) belong to patients with development images: their "
            "patient's membership is known there, and their calls may not show what the "
            "attack finds in an image alone"
        )
    copies = prediction.candidates.duplicates
    if copies:
        shown = ", ".join(f"{printable(a)} = {printable(b)}" for a, b in copies[:10])
        out.append(
            f"{len(copies)} candidate(s) are copies of another candidate and got its call: {shown}"
        )
    formulas = [name for name, _, _ in prediction.rows() if name.startswith(FORMULA_STARTS)]
    if formulas:
        shown = ", ".join(printable(name) for name in formulas[:10])
        out.append(
            f"{len(formulas)} candidate name(s) begin with =, +, -, @ or a tab ({shown}): a "
            "spreadsheet may run such a name as a formula when it opens the predictions. They "
            "are written as they are, to match the files: open the CSV as text, or rename "
            "those files"
        )
    skipped = prediction.candidates.skipped
    if skipped:
        out.append(
            f"{len(skipped)} unreadable candidate file(s) were skipped and have no line in "
            "the predictions: " + ", ".join(printable(str(p)) for p in sorted(skipped)[:10])
        )
    return out
