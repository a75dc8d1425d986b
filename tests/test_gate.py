"""The gate: the per-fold choice of attack, the checks and the verdict."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from pytest_gan_privacy import gate
from pytest_gan_privacy.gate import (
    ConclusivePower,
    F1Limit,
    NoExposure,
    NoMemberNearCopies,
    NoNearCopies,
    best_per_fold,
    checks_for,
    decide,
)
from pytest_gan_privacy.metrics import stratified_folds
from pytest_gan_privacy.nearcopies import (
    DECIDING_LEVEL,
    LevelPower,
    NearCopies,
    NearCopyThreshold,
    PowerCheck,
)

THRESHOLD = NearCopyThreshold(value=0.9, reference=0.8, copy_level=0.9)


def _power(found: int, planted: int = 10) -> PowerCheck:
    return PowerCheck({DECIDING_LEVEL: LevelPower(planted, found)}, list(range(planted)))


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
    near_copies: NearCopies = field(default_factory=lambda: NearCopies(threshold=THRESHOLD))
    power: PowerCheck | None = None
    exposure: object = None
    labels: tuple = (1, 1, 0, 0)

    @property
    def candidates(self):
        return SimpleNamespace(labels=np.array(self.labels))

    @property
    def gate(self):
        return self


@dataclass
class _Settings:
    max_f1: float = 0.6
    fail_on_near_copies: bool = False
    fail_inconclusive: bool = False
    allow_member_near_copies: bool = True
    exposure_alpha: float = 0.0
    fail_on_regression: float | None = None


def test_the_f1_limit_fails_only_above_it():
    assert F1Limit(0.6).fails(_Result(f1=0.6)) is None
    assert F1Limit(0.6).fails(_Result(f1=0.61)) == "leakage F1 0.610 is over the limit 0.600"


def test_near_copies_and_power_are_checked_only_when_asked():
    copied = NearCopies(
        THRESHOLD, generated_index=[3], candidate_index=[2], similarity=[0.95], copied=[2]
    )
    weak = _power(found=7)
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
    power = _power(found=needed)
    result = _Result(f1=0.1, settings=_Settings(fail_inconclusive=True), power=power)
    assert decide(result).verdict == "PASS"
    result.power = _power(found=needed - 1)
    assert decide(result).verdict == "FAIL"


def test_a_member_with_a_near_copy_fails_by_default_a_non_member_does_not():
    on_non_member = NearCopies(THRESHOLD, [3], [2], [0.95], copied=[2])
    on_member = NearCopies(THRESHOLD, [3], [0], [0.95], copied=[0, 2])
    default = _Settings(allow_member_near_copies=False)
    assert NoMemberNearCopies() in checks_for(default)
    assert decide(_Result(f1=0.5, settings=default, near_copies=on_non_member)).passed
    failed = decide(_Result(f1=0.5, settings=default, near_copies=on_member))
    assert failed.failures == ["1 member(s) have a near-copy among the generated images"]


def test_significant_exposure_fails_at_the_level_set():
    exposed = SimpleNamespace(
        members_exposed=12,
        n_members=200,
        non_members_exposed=2,
        n_non_members=200,
        fpr=0.01,
        expected_by_chance=2.5,
        p_value=0.004,
    )
    strict = _Result(f1=0.5, settings=_Settings(exposure_alpha=0.01), exposure=exposed)
    assert decide(strict).failures == [
        "12 of 200 members are exposed at 1.0% FPR against 2 of 200 non-members (expected "
        "by chance: 2.5; p = 0.004 < 0.01)"
    ]
    assert decide(
        _Result(f1=0.5, settings=_Settings(exposure_alpha=0.001), exposure=exposed)
    ).passed
    assert NoExposure(0.01) not in checks_for(_Settings(exposure_alpha=0))
