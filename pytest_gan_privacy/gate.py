"""The gate: which attack decides, the checks a release must pass, and the verdict.

1. The deciding score, "best per fold": each cross-fitting fold is classified by the
   attack with the best AUC on the other folds, with its threshold fitted there
   (`best_per_fold`). No attack wins everywhere, and choosing on the candidates being
   classified would flatter the numbers. A rank mean and a logistic regression of all
   attacks do no better (docs/how-it-works.md, "The gate").
2. The checks: small objects whose `fails(evidence)` returns why the release fails, or
   None. By default: the F1 limit, no member with a near-copy, and no significant
   exposure (members identified at low FPR beyond chance: exposure.py); a release that
   lets an attacker pick out a few patients with confidence leaks, whatever its F1.
   When asked: no near-copy at all, and a conclusive power check.
3. The verdict (`decide`): FAIL when any check fails; PASS, or "PASS (inconclusive)" when
   the power check found fewer planted copies than it needs to make a PASS mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.metrics import roc_auc_score

from .baseline import Comparison
from .exposure import Exposure
from .metrics import FoldCall, FoldRule, MembershipMetrics, column_ranks, cross_fit, fit_threshold
from .nearcopies import NearCopies, PowerCheck
from .result import Decision
from .settings import AuditSettings, ThresholdPolicy

GATE = "best per fold"  # the gate's name among the attacks, in the JSON and the report
GATE_DESCRIPTION = "per fold, the attack with the best AUC on the other folds"
POWER_NEEDED = 0.9  # fraction of planted copies the detector must find for a conclusive PASS


def best_attack_rule(policy: ThresholdPolicy | str) -> FoldRule:
    """The fold's attack: the best AUC on the other folds, with its threshold fitted
    there by `policy`."""

    def rule(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> FoldCall:
        aucs = [roc_auc_score(labels, train[:, a]) for a in range(train.shape[1])]
        best = int(np.argmax(aucs))
        threshold = fit_threshold(train[:, best], labels, policy)
        return FoldCall(test[:, best] >= threshold, best, threshold)

    return rule


def best_per_fold(
    columns: np.ndarray,
    labels: np.ndarray,
    policy: ThresholdPolicy | str = ThresholdPolicy.PREVALENCE,
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
    ranks = column_ranks(columns)
    return cross_fit(ranks, labels, best_attack_rule(policy), folds, seed, bootstrap, groups)


@dataclass(frozen=True)
class Evidence:
    """What the checks read: the settings, the gate's metrics (in the membership unit),
    the candidates' labels, their near-copies, exposure and the power check."""

    settings: AuditSettings
    gate: MembershipMetrics
    labels: np.ndarray
    near_copies: NearCopies | None = None
    exposure: Exposure | None = None
    power: PowerCheck | None = None
    baseline: Comparison | None = None  # against a previous audit (--baseline)


# --- the checks ----------------------------------------------------------------------


class Check(Protocol):
    def fails(self, evidence: Evidence) -> str | None:
        """Why the release fails this check, or None when it passes."""


@dataclass(frozen=True)
class F1Limit:
    """The leakage F1 of the gate must be at or below the limit."""

    max_f1: float

    def fails(self, evidence: Evidence) -> str | None:
        f1 = evidence.gate.f1
        if f1 > self.max_f1:
            return f"leakage F1 {f1:.3f} is over the limit {self.max_f1:.3f}"
        return None


@dataclass(frozen=True)
class NoNearCopies:
    """No generated image may be a near-copy of a candidate (--fail-on-near-copies)."""

    def fails(self, evidence: Evidence) -> str | None:
        if evidence.near_copies:
            return f"{len(evidence.near_copies)} generated image(s) are near-copies of candidates"
        return None


@dataclass(frozen=True)
class NoMemberNearCopies:
    """No member may have a near-copy among the generated images (the worst leak)."""

    def fails(self, evidence: Evidence) -> str | None:
        copied = [] if evidence.near_copies is None else evidence.near_copies.copied
        members = sum(int(evidence.labels[c]) for c in copied)
        if members:
            return f"{members} member(s) have a near-copy among the generated images"
        return None


@dataclass(frozen=True)
class NoExposure:
    """Members identified at low FPR, out of fold, must not exceed what chance gives:
    the exact test's p-value at or above `alpha` (exposure.py)."""

    alpha: float

    def fails(self, evidence: Evidence) -> str | None:
        e = evidence.exposure
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

    def fails(self, evidence: Evidence) -> str | None:
        power = evidence.power
        if power is not None and not conclusive(power):
            return (
                f"the power check found only {power.found} of {power.planted} planted "
                "copies: a PASS would be inconclusive"
            )
        return None


@dataclass(frozen=True)
class NoRegression:
    """The leakage F1 and the AUC may not grow by more than `margin` since the baseline
    (--fail-on-regression). A baseline of other candidates compares nothing (the
    audit says so in its warnings)."""

    margin: float

    def fails(self, evidence: Evidence) -> str | None:
        comparison = evidence.baseline
        if comparison is None or not comparison.comparable:
            return None
        grew = comparison.grew(self.margin)
        if not grew:
            return None
        moved = ", ".join(change.text() for change in grew)
        return (
            f"it leaks more than the previous release ({moved}: up by more than "
            f"{self.margin:g}; baseline {comparison.baseline.path})"
        )


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
    if settings.fail_on_regression is not None:
        checks.append(NoRegression(settings.fail_on_regression))
    return checks


# --- the verdict ---------------------------------------------------------------------


def conclusive(power: PowerCheck | None) -> bool:
    """The power check found (nearly) all planted copies: a PASS means something."""
    return power is None or power.fraction >= POWER_NEEDED


def decide(evidence: Evidence) -> Decision:
    """Run every check the settings ask for."""
    checks = checks_for(evidence.settings)
    failures = [f for check in checks if (f := check.fails(evidence))]
    return Decision(failures=failures, conclusive=conclusive(evidence.power))
