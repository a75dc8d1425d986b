"""The gate: which attack decides, the checks a release must pass, and the verdict.

1. The deciding score, "best per fold": each cross-fitting fold is classified by the
   attack with the best AUC on the other folds, with its threshold fitted there
   (`best_per_fold`). No attack wins everywhere, and choosing on the candidates being
   classified would flatter the numbers. A rank mean and a logistic regression of all
   attacks were tried: no better (README, "Attacks").
2. The checks: small objects whose `fails(result)` returns why the release fails, or
   None. By default: the F1 limit, no member with a near-copy, and no significant
   exposure (members identified at low FPR beyond chance: exposure.py); a release that
   lets an attacker pick out a few patients with confidence leaks, whatever its F1.
   When asked: no near-copy at all, and a conclusive power check.
3. The verdict: FAIL when any check fails; PASS, or "PASS (inconclusive)" when the
   power check found fewer planted copies than it needs to make a PASS mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from .metrics import (
    MembershipMetrics,
    check_fold_counts,
    fit_threshold,
    stratified_folds,
    summarise,
)

if TYPE_CHECKING:
    from .audit import AuditResult
    from .settings import AuditSettings

GATE = "best per fold"  # the gate's name among the attacks, in the JSON and the report
GATE_DESCRIPTION = "per fold, the attack with the best AUC on the other folds"
POWER_NEEDED = 0.9  # fraction of planted copies the detector must find for a conclusive PASS


def best_per_fold(
    columns: np.ndarray,
    labels: np.ndarray,
    policy: str = "prevalence",
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 1000,
    groups: np.ndarray | None = None,
) -> MembershipMetrics:
    """The gate's metrics: choose an attack per fold, on the other folds, and classify
    the fold with it.

    `columns` is (C, A): A attacks' scores. Scores become ranks over all candidates
    first (labels-blind), so folds that chose different attacks give comparable
    out-of-fold scores; the thresholds are in ranks. `chosen` names each fold's column.
    The folds are those of metrics.membership_metrics for the same seed (by patient
    with `groups`).
    """
    labels = np.asarray(labels, dtype=int)
    check_fold_counts(int(labels.sum()), int((labels == 0).sum()), folds)
    ranks = np.column_stack([rankdata(c) / len(c) for c in np.asarray(columns, float).T])
    calls = np.zeros(len(labels), dtype=bool)
    out_of_fold = np.zeros(len(labels))
    thresholds, chosen = [], []
    for test in stratified_folds(labels, folds, seed, groups):
        train = np.setdiff1d(np.arange(len(labels)), test)
        aucs = [roc_auc_score(labels[train], ranks[train, a]) for a in range(ranks.shape[1])]
        best = int(np.argmax(aucs))
        threshold = fit_threshold(ranks[train, best], labels[train], policy)
        calls[test] = ranks[test, best] >= threshold
        out_of_fold[test] = ranks[test, best]
        thresholds.append(threshold)
        chosen.append(best)
    return summarise(labels, out_of_fold, calls, thresholds, seed, bootstrap, chosen, groups=groups)


# --- the checks ----------------------------------------------------------------------


class Check(Protocol):
    def fails(self, result: AuditResult) -> str | None:
        """Why the release fails this check, or None when it passes."""


@dataclass(frozen=True)
class F1Limit:
    """The leakage F1 of the gate must be at or below the limit."""

    max_f1: float

    def fails(self, result: AuditResult) -> str | None:
        f1 = result.gate.f1
        if f1 > self.max_f1:
            return f"leakage F1 {f1:.3f} is over the limit {self.max_f1:.3f}"
        return None


@dataclass(frozen=True)
class NoNearCopies:
    """No generated image may be a near-copy of a candidate (--fail-on-near-copies)."""

    def fails(self, result: AuditResult) -> str | None:
        if result.near_copies:
            return f"{len(result.near_copies)} generated image(s) are near-copies of candidates"
        return None


@dataclass(frozen=True)
class NoMemberNearCopies:
    """No member may have a near-copy among the generated images (the worst leak)."""

    def fails(self, result: AuditResult) -> str | None:
        copied = [] if result.near_copies is None else result.near_copies.copied
        members = sum(int(result.candidates.labels[c]) for c in copied)
        if members:
            return f"{members} member(s) have a near-copy among the generated images"
        return None


@dataclass(frozen=True)
class NoExposure:
    """Members identified at low FPR, out of fold, must not exceed what chance gives:
    the exact test's p-value at or above `alpha` (exposure.py)."""

    alpha: float

    def fails(self, result: AuditResult) -> str | None:
        e = result.exposure
        if e is None or e.p_value >= self.alpha:
            return None
        return (
            f"{e.members_exposed} of {e.n_members} members are exposed at {e.fpr:.1%} FPR "
            f"against {e.non_members_exposed} of {e.n_non_members} non-members (expected by "
            f"chance: {e.expected_by_chance:.1f}; p = {e.p_value:.2g} < {self.alpha:g})"
        )


@dataclass(frozen=True)
class ConclusivePower:
    """The power check must find its planted copies (--fail-inconclusive)."""

    def fails(self, result: AuditResult) -> str | None:
        power = result.power
        if power is not None and not conclusive(result):
            return (
                f"the power check found only {power.found} of {power.planted} planted "
                "copies: a PASS would be inconclusive"
            )
        return None


def checks_for(settings: AuditSettings) -> list[Check]:
    """The checks these settings ask for, the F1 limit first."""
    checks: list[Check] = [F1Limit(settings.max_f1)]
    if not settings.allow_member_near_copies:
        checks.append(NoMemberNearCopies())
    if settings.exposure_alpha > 0:
        checks.append(NoExposure(settings.exposure_alpha))
    if settings.fail_on_near_copies:
        checks.append(NoNearCopies())
    if settings.fail_inconclusive:
        checks.append(ConclusivePower())
    return checks


# --- the verdict ---------------------------------------------------------------------


def conclusive(result: AuditResult) -> bool:
    """The power check found (nearly) all planted copies: a PASS means something."""
    return result.power is None or result.power.fraction >= POWER_NEEDED


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every reason it fails (empty: it passes)."""

    failures: list[str]
    conclusive: bool

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "FAIL"
        return "PASS" if self.conclusive else "PASS (inconclusive)"


def decide(result: AuditResult) -> Decision:
    """Run every check the result's settings ask for."""
    failures = [f for check in checks_for(result.settings) if (f := check.fails(result))]
    return Decision(failures=failures, conclusive=conclusive(result))
