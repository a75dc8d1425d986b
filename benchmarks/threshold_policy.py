"""How the threshold policies behave with and without a membership signal.

    python benchmarks/threshold_policy.py [--permutations 100]

For every brainmri64 scenario, pixel nearest-neighbour scores are classified with each
threshold policy (cross-fitted). The same scores with shuffled labels show what F1 a
score with no information gets: its mean and 95th percentile are the bar the default
F1 limit must clear.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scenarios import DATA, SCENARIOS
from sklearn.metrics import f1_score

from pytest_gan_privacy.attacks import nearest_neighbour_attack
from pytest_gan_privacy.audit import load_candidates
from pytest_gan_privacy.encoders import PixelEncoder, encode_images
from pytest_gan_privacy.images import load_image_set
from pytest_gan_privacy.metrics import cross_fitted_calls, stratified_folds
from pytest_gan_privacy.settings import THRESHOLD_POLICIES, AuditSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--permutations", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'scenario':11s} {'policy':11s} {'F1':>6s} {'no-signal F1: mean':>19s} {'p95':>6s}")
    for name in SCENARIOS:
        root = DATA / name
        settings = AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
        )
        candidates = load_candidates(settings)
        encoder = PixelEncoder()
        generated = encode_images(load_image_set(settings.generated, "generated"), encoder, "cpu")
        features = np.concatenate(
            [
                encode_images(candidates.members, encoder, "cpu"),
                encode_images(candidates.non_members, encoder, "cpu"),
            ]
        )
        scores = nearest_neighbour_attack(torch.from_numpy(features), generated).scores
        labels = candidates.labels
        for policy in THRESHOLD_POLICIES:
            folds = stratified_folds(labels, 5, 0)
            f1 = f1_score(labels, cross_fitted_calls(scores, labels, folds, policy)[0])
            null = []
            for _ in range(args.permutations):
                shuffled = rng.permutation(labels)
                folds = stratified_folds(shuffled, 5, 0)
                null.append(
                    f1_score(shuffled, cross_fitted_calls(scores, shuffled, folds, policy)[0])
                )
            print(
                f"{name:11s} {policy:11s} {f1:6.3f} {np.mean(null):19.3f} "
                f"{np.quantile(null, 0.95):6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
