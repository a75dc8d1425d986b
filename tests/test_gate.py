"""The gate: the per-fold choice of attack, the checks and the verdict."""

from dataclasses import dataclass, field

import numpy as np

from pytest_gan_privacy import gate
from pytest_gan_privacy.gate import (
    ConclusivePower,
    F1Limit,
    NoNearCopies,
    best_per_fold,
    checks_for,
    decide,
)
from pytest_gan_privacy.metrics import stratified_folds
from pytest_gan_privacy.nearcopies import NearCopies, PowerCheck


def test_choosing_among_attacks_is_cross_fitted_and_finds_the_informative_one():
    rng = np.random.default_rng(4)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    noise = rng.standard_normal((200, 3))
    informative = labels * 2.0 + rng.standard_normal(200)
    m = best_per_fold(np.column_stack([noise, informative]), labels)
    assert m.chosen == [3] * 5
    assert m.f1 > 0.8 and m.auc > 0.9
    assert m.scores.shape == (200,) and 0 < m.scores.min() <= m.scores.max() <= 1


def test_choosing_among_noise_stays_near_chance():
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(150), np.zeros(150)].astype(int)
    m = best_per_fold(rng.random((300, 6)), labels, seed=1)
    assert abs(m.f1 - 0.5) < 0.08 and abs(m.auc - 0.5) < 0.08


def test_each_fold_chooses_on_the_other_folds_only(monkeypatch):
    """An attack that is perfect on one fold only must never be chosen for that fold."""
    labels = np.r_[np.ones(50), np.zeros(50)].astype(int)
    folds = stratified_folds(labels, 5, seed=0)
    rng = np.random.default_rng(6)
    weak = labels * 0.6 + rng.standard_normal(100)  # some signal everywhere
    local = rng.standard_normal(100)
    local[folds[0]] = labels[folds[0]] * 10.0  # perfect on fold 0, noise elsewhere
    m = best_per_fold(np.column_stack([weak, local]), labels, seed=0)
    assert m.chosen[0] == 0  # fold 0 never saw how good `local` is there


@dataclass
class _Result:
    """What the checks read from an AuditResult."""

    f1: float
    settings: object = None
    near_copies: NearCopies = field(default_factory=lambda: NearCopies(threshold=0.9))
    power: PowerCheck | None = None

    @property
    def gate(self):
        return self


@dataclass
class _Settings:
    max_f1: float = 0.6
    fail_on_near_copies: bool = False
    fail_inconclusive: bool = False


def test_the_f1_limit_fails_only_above_it():
    assert F1Limit(0.6).fails(_Result(f1=0.6)) is None
    assert F1Limit(0.6).fails(_Result(f1=0.61)) == "leakage F1 0.610 is over the limit 0.600"


def test_near_copies_and_power_are_checked_only_when_asked():
    copied = NearCopies(0.9, generated_index=[3], candidate_index=[0], similarity=[0.95])
    weak = PowerCheck(planted=10, found=7, members=list(range(10)))
    result = _Result(f1=0.5, settings=_Settings(), near_copies=copied, power=weak)
    assert [type(c) for c in checks_for(result.settings)] == [F1Limit]
    decision = decide(result)
    assert decision.passed and decision.verdict == "PASS (inconclusive)"
    result.settings = _Settings(fail_on_near_copies=True, fail_inconclusive=True)
    assert decide(result).failures == [
        NoNearCopies().fails(result),
        ConclusivePower().fails(result),
    ]
    assert decide(result).verdict == "FAIL"
    assert "1 generated image(s) are near-copies" in decide(result).failures[0]
    assert "found only 7 of 10 planted copies" in decide(result).failures[1]


def test_a_power_check_at_the_needed_fraction_is_conclusive():
    needed = round(10 * gate.POWER_NEEDED)
    power = PowerCheck(planted=10, found=needed, members=list(range(10)))
    result = _Result(f1=0.1, settings=_Settings(fail_inconclusive=True), power=power)
    assert decide(result).verdict == "PASS"
    result.power = PowerCheck(planted=10, found=needed - 1, members=list(range(10)))
    assert decide(result).verdict == "FAIL"
