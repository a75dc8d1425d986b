import numpy as np
import pytest

from pytest_gan_privacy import metrics
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.metrics import chance_f1, membership_metrics
from pytest_gan_privacy.settings import ThresholdPolicy


def test_perfect_scores_give_f1_one_and_a_tight_interval():
    labels = np.r_[np.ones(50), np.zeros(50)].astype(int)
    m = membership_metrics(labels + np.linspace(0, 0.5, 100), labels)
    assert m.f1 == 1.0 and m.auc == 1.0 and m.accuracy == 1.0
    assert m.f1_ci == (1.0, 1.0)
    assert m.tpr_at_1pct_fpr is None  # 50 non-members cannot measure a 1 % FPR
    assert m.confusion == {"tn": 50, "fp": 0, "fn": 0, "tp": 50}


def test_labels_blind_scores_stay_near_chance():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200), np.zeros(200)].astype(int)
    m = membership_metrics(rng.random(400), labels, seed=3)
    assert abs(m.f1 - 0.5) < 0.08
    assert abs(m.chance_f1 - 0.5) < 0.02
    assert m.f1_ci[0] < m.chance_f1 < m.f1_ci[1]
    assert m.tpr_at_1pct_fpr is not None and m.tpr_at_0_1pct_fpr is None


def test_threshold_is_never_fitted_on_the_fold_it_classifies(monkeypatch):
    seen = []
    fit = metrics.fit_threshold

    def spy(scores, labels, policy):
        seen.append(set(np.round(scores, 12)))
        return fit(scores, labels, policy)

    monkeypatch.setattr(metrics, "fit_threshold", spy)
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(25), np.zeros(25)].astype(int)
    scores = rng.random(50)
    folds = metrics.stratified_folds(labels, 5, seed=0)
    metrics.cross_fit(scores[:, None], labels, metrics.threshold_rule("prevalence"), 5, 0, 0)
    assert len(seen) == 5
    for fitted_on, test in zip(seen, folds, strict=True):
        assert not fitted_on & set(np.round(scores[test], 12))


@pytest.mark.parametrize("policy", ["prevalence", "max-f1"])
def test_policies_separate_a_clear_signal(policy):
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    scores = labels * 1.5 + rng.standard_normal(200)
    m = membership_metrics(scores, labels, policy=policy)
    assert m.f1 > 0.7 and m.auc > 0.8


def test_chance_f1_is_that_of_a_random_guess_with_the_same_rate():
    labels = np.r_[np.ones(20), np.zeros(80)].astype(int)
    assert chance_f1(labels, np.ones(100, bool)) == pytest.approx(2 * 0.2 / 1.2)
    calls = np.r_[np.ones(20), np.zeros(80)].astype(bool)
    assert chance_f1(labels, calls) == pytest.approx(0.2)


def test_too_few_candidates_for_the_folds_is_a_clear_error():
    labels = np.r_[np.ones(3), np.zeros(10)].astype(int)
    with pytest.raises(AuditInputError, match="used folder has 3 image.*at least 5"):
        membership_metrics(np.arange(13.0), labels)


def test_every_threshold_policy_the_options_offer_has_a_rule():
    assert set(metrics.THRESHOLD_RULES) == set(ThresholdPolicy)  # a rule for every policy


def test_no_bootstrap_means_no_interval_not_a_zero_width_one():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(40), np.zeros(40)].astype(int)
    m = membership_metrics(rng.random(80), labels, bootstrap=0)
    assert m.f1_ci is None and m.as_dict()["f1_ci"] is None
    assert membership_metrics(rng.random(80), labels, bootstrap=200).f1_ci is not None
