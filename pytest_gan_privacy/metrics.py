"""Honest membership metrics: cross-fitted thresholds, intervals and chance level.

The threshold that turns scores into used / not-used calls is never fitted on the
candidates it classifies: with stratified k-fold cross-fitting, each fold is
classified by a threshold fitted on the other folds, and every metric is computed
from these out-of-fold calls. Threshold-free metrics (AUC, TPR at low FPR) use
the scores directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .errors import AuditInputError
from .settings import ThresholdPolicy

LOW_FPRS = (0.01, 0.001)


@dataclass
class MembershipMetrics:
    """The numbers of one attack, all from out-of-fold calls or from the raw scores."""

    f1: float
    f1_ci: tuple[float, float] | None  # None: no bootstrap, no interval
    chance_f1: float
    accuracy: float
    precision: float
    recall: float
    specificity: float
    auc: float
    tpr_at_1pct_fpr: float | None
    tpr_at_0_1pct_fpr: float | None
    confusion: dict  # tn, fp, fn, tp
    thresholds: list[float]  # one per fold
    chosen: list[int] = field(default_factory=list)  # per fold, when choosing among attacks
    # per candidate, so not in as_dict(): the out-of-fold call (True: used) and the score
    # the metrics were computed from (out-of-fold ranks when choosing among attacks:
    # cross_fit)
    calls: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("calls")
        out.pop("scores")
        out["f1_ci"] = None if self.f1_ci is None else list(self.f1_ci)
        return out


def check_fold_counts(n_members: int, n_non_members: int, folds: int) -> None:
    """Each class needs at least one candidate per fold."""
    for role, n in (("used", n_members), ("not_used", n_non_members)):
        if n < folds:
            raise AuditInputError(
                f"the {role} folder has {n} image(s), but the cross-fitted threshold needs "
                f"at least {folds} per class (one per fold): add {role} images or lower "
                f"the number of folds (--folds, at least 2)"
            )


def check_group_counts(labels: np.ndarray, groups: np.ndarray, folds: int) -> None:
    """With patients, each class needs at least one patient per fold."""
    for role, label in (("used", 1), ("not_used", 0)):
        n = len(np.unique(groups[labels == label]))
        if n < folds:
            raise AuditInputError(
                f"the {role} images come from {n} patient(s), but folds by patient need at "
                f"least {folds} per class (one per fold): add {role} patients or lower the "
                "number of folds (--folds, at least 2)"
            )


def stratified_folds(
    labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Test indices of each fold. Labels must be in a name-independent order. With
    `groups` (the patient of each candidate), all images of a patient fall in one fold
    (StratifiedGroupKFold): a threshold fitted on a patient's other slices would flatter
    the numbers."""
    if groups is not None:
        check_group_counts(np.asarray(labels), np.asarray(groups), folds)
        grouped = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        split = grouped.split(np.zeros(len(labels)), labels, groups)
        return [test for _train, test in split]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _train, test in splitter.split(np.zeros(len(labels)), labels)]


def chance_over_limit(n_members: int, n_non_members: int, limit: float) -> float:
    """The chance that a labels-blind guess calling as many candidates used as there are
    members (the prevalence policy) gets an F1 over `limit`: TP is hypergeometric, and
    F1 = TP / n_members. What the F1 limit means with this few units."""
    from scipy.stats import hypergeom

    n = n_members + n_non_members
    needed = int(np.floor(limit * n_members)) + 1  # TP / n_members > limit
    return float(hypergeom.sf(needed - 1, n, n_members, n_members))


def prevalence_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Call "used" the same fraction of candidates as are members (the attacker knows
    how many images trained the model, as in ImageCLEFmed GANs): the threshold midway
    between the last score called used and the first not called."""
    ranked = np.sort(scores)[::-1]
    n_called = min(max(1, int(round(labels.mean() * len(scores)))), len(scores) - 1)
    return float((ranked[n_called - 1] + ranked[n_called]) / 2)


def max_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that maximises F1 on these scores."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


ThresholdRule = Callable[[np.ndarray, np.ndarray], float]

# Each threshold policy's rule. Measured in benchmarks/threshold_policy.py: with no
# information, prevalence gives F1 0.50, max-f1 0.66 (calling everything used gives 2/3).
THRESHOLD_RULES: dict[ThresholdPolicy, ThresholdRule] = {
    ThresholdPolicy.PREVALENCE: prevalence_threshold,
    ThresholdPolicy.MAX_F1: max_f1_threshold,
}


def fit_threshold(scores: np.ndarray, labels: np.ndarray, policy: ThresholdPolicy | str) -> float:
    """A score threshold fitted on labelled scores by `policy` (THRESHOLD_RULES); a
    candidate at or above it is called used."""
    return THRESHOLD_RULES[ThresholdPolicy(policy)](scores, labels)


@dataclass(frozen=True)
class FoldCall:
    """What a per-fold rule decides for the fold it classifies, from the other folds."""

    calls: np.ndarray  # the fold's calls (True: used)
    chosen: int | None = None  # the column (attack) it chose, when it chooses
    threshold: float | None = None  # the threshold fitted on the other folds, if any


# (the other folds' columns (n, A), their labels, the fold's columns (m, A)) -> FoldCall
FoldRule = Callable[[np.ndarray, np.ndarray, np.ndarray], FoldCall]


def threshold_rule(policy: ThresholdPolicy | str) -> FoldRule:
    """One attack's rule: a threshold fitted by `policy` on the other folds."""

    def rule(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> FoldCall:
        threshold = fit_threshold(train[:, 0], labels, policy)
        return FoldCall(test[:, 0] >= threshold, threshold=threshold)

    return rule


def cross_fit(
    columns: np.ndarray,
    labels: np.ndarray,
    rule: FoldRule,
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 1000,
    groups: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> MembershipMetrics:
    """Cross-fitting: each stratified fold (by patient with `groups`) is called by `rule`
    fitted on the other folds, and every metric comes from these out-of-fold calls.

    `columns` (C, A): the attacks' scores the rule sees. `scores` (C, A), default
    `columns`: what the threshold-free metrics read, the chosen column's per fold (ranks
    over all candidates when folds may choose different attacks, so that they compare)."""
    labels = np.asarray(labels, dtype=int)
    columns = np.asarray(columns, dtype=float).reshape(len(labels), -1)
    scores = columns if scores is None else np.asarray(scores, dtype=float)
    check_fold_counts(int(labels.sum()), int((labels == 0).sum()), folds)
    calls = np.zeros(len(labels), dtype=bool)
    out_of_fold = np.zeros(len(labels))
    thresholds, chosen = [], []
    for test in stratified_folds(labels, folds, seed, groups):
        train = np.setdiff1d(np.arange(len(labels)), test)
        fold = rule(columns[train], labels[train], columns[test])
        calls[test] = fold.calls
        out_of_fold[test] = scores[test, fold.chosen or 0]
        if fold.threshold is not None:
            thresholds.append(fold.threshold)
        if fold.chosen is not None:
            chosen.append(fold.chosen)
    return summarise(labels, out_of_fold, calls, thresholds, seed, bootstrap, chosen, groups)


def column_ranks(columns: np.ndarray) -> np.ndarray:
    """Each column's scores as ranks in (0, 1] over all rows: labels-blind, and
    comparable across attacks."""
    return np.column_stack([rankdata(c) / len(c) for c in np.asarray(columns, float).T])


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float | None:
    """TPR at the given FPR, or None when there are too few non-members to measure it
    (fewer than 1 / fpr: one false positive would already exceed it)."""
    if (labels == 0).sum() < round(1 / fpr):
        return None
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr].max())


def chance_f1(labels: np.ndarray, calls: np.ndarray) -> float:
    """Expected F1 of a labels-blind guess that calls the same fraction of candidates used.

    Guessing at random with rate q on a set with member fraction p gives precision p
    and recall q, so F1 = 2pq / (p + q).
    """
    p, q = labels.mean(), calls.mean()
    return float(2 * p * q / (p + q)) if p + q > 0 else 0.0


def bootstrap_f1_interval(
    labels: np.ndarray,
    calls: np.ndarray,
    rounds: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """95 % interval of F1 over candidates resampled within each class; None without
    resamples (a zero-width "interval" would pass for a measured one). With `groups`,
    patients are resampled (all their images together): a patient's slices are not
    independent draws, and resampling them one by one gives too narrow an interval.

    The out-of-fold calls are kept fixed: this is the sampling noise of the
    candidate set, the larger part of the uncertainty with a few hundred images.
    """
    if rounds == 0:
        return None
    if groups is not None:
        return _group_bootstrap(labels, calls, rounds, rng, np.asarray(groups))
    members, non_members = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    picks = np.concatenate(
        [
            rng.choice(members, size=(rounds, len(members))),
            rng.choice(non_members, size=(rounds, len(non_members))),
        ],
        axis=1,
    )
    y, c = labels[picks], calls[picks]
    tp = (y & c).sum(1)
    f1 = 2 * tp / np.maximum(y.sum(1) + c.sum(1), 1)
    lo, hi = np.quantile(f1, [0.025, 0.975])
    return float(lo), float(hi)


def _group_bootstrap(
    labels: np.ndarray, calls: np.ndarray, rounds: int, rng: np.random.Generator, groups
) -> tuple[float, float]:
    """bootstrap_f1_interval with whole patients resampled within each class."""
    codes, index = np.unique(groups, return_inverse=True)
    member = np.zeros(len(codes), int)
    np.maximum.at(member, index, labels)  # a patient is in one class (audit checks it)
    tally = np.zeros((len(codes), 3))  # per patient: members, calls, true positives
    np.add.at(tally, index, np.column_stack([labels, calls, labels & calls]).astype(float))
    members, non_members = np.flatnonzero(member == 1), np.flatnonzero(member == 0)
    picks = np.concatenate(
        [
            rng.choice(members, size=(rounds, len(members))),
            rng.choice(non_members, size=(rounds, len(non_members))),
        ],
        axis=1,
    )
    y, c, tp = (tally[picks, k].sum(1) for k in range(3))
    f1 = 2 * tp / np.maximum(y + c, 1)
    lo, hi = np.quantile(f1, [0.025, 0.975])
    return float(lo), float(hi)


def membership_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    policy: ThresholdPolicy | str = ThresholdPolicy.PREVALENCE,
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 1000,
    groups: np.ndarray | None = None,
) -> MembershipMetrics:
    """Every number of one attack: a threshold cross-fitted by `policy` over stratified
    folds (by patient with `groups`), the metrics of its out-of-fold calls, and the
    threshold-free ones.

    `scores` (C,), higher = more likely a member; `labels` 1 for members (used), 0 for
    non-members. Both must be in a name-independent order (content-hash order), so
    that folds and bootstrap samples do not depend on names.
    """
    rule = threshold_rule(policy)
    return cross_fit(np.asarray(scores, dtype=float)[:, None], labels, rule, folds, seed,
                     bootstrap, groups)  # fmt: skip


def summarise(
    labels: np.ndarray,
    scores: np.ndarray,
    calls: np.ndarray,
    thresholds: list[float],
    seed: int,
    bootstrap: int,
    chosen: list[int] | None = None,
    groups: np.ndarray | None = None,
) -> MembershipMetrics:
    """The metrics of out-of-fold `calls` and of the `scores` they came from (`groups`:
    the interval resamples patients)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, calls, average="binary", zero_division=0
    )
    tn, fp, fn, tp = confusion_matrix(labels, calls, labels=[0, 1]).ravel()
    rng = np.random.default_rng(seed)
    return MembershipMetrics(
        f1=float(f1),
        f1_ci=bootstrap_f1_interval(labels, calls, bootstrap, rng, groups),
        chance_f1=chance_f1(labels, calls),
        accuracy=float((tp + tn) / len(labels)),
        precision=float(precision),
        recall=float(recall),
        specificity=float(tn / (tn + fp)) if tn + fp else 0.0,
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=tpr_at_fpr(labels, scores, LOW_FPRS[0]),
        tpr_at_0_1pct_fpr=tpr_at_fpr(labels, scores, LOW_FPRS[1]),
        confusion={"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        thresholds=[float(t) for t in thresholds],
        chosen=list(chosen or []),
        calls=calls,
        scores=scores,
    )
