"""How the threshold policies and the gate behave with and without a membership signal.

    python benchmarks/threshold_policy.py [--permutations 100] [--features pixels]

For every brainmri64 scenario the audit's attack scores are classified with each
threshold policy, by the gate (the attack chosen per fold, cross-fitted) and by the
pixel baseline alone. The same scores with shuffled labels show the F1 a score with
no information about membership gets: its mean and 95th percentile are the bar the
default F1 limit must clear, so that a model that never saw the candidates passes.
"""

from __future__ import annotations

import argparse

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import numpy as np
from scenarios import DATA, SCENARIOS

from pytest_gan_privacy.metrics import membership_metrics
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.settings import AuditSettings, ThresholdPolicy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--features", default=None)
    args = parser.parse_args()
    extra = {"features": args.features} if args.features else {}
    rng = np.random.default_rng(0)
    print(
        f"{'scenario':11s} {'scores':16s} {'policy':11s} {'F1':>6s} "
        f"{'no-signal F1: mean':>19s} {'p95':>6s} {'max':>6s}"
    )
    for name in SCENARIOS:
        root = DATA / name
        result = run_audit(
            AuditSettings(
                generated=root / "generated",
                used=root / "real" / "used",
                not_used=root / "real" / "not_used",
                bootstrap=0,
                no_cache=True,
                **extra,
            )
        )
        labels = result.candidates.labels
        columns = np.column_stack(
            [a.scores.scores for n, a in result.attacks.items() if n != result.gating_attack]
        )
        for what, scores in (("gate", columns), ("pixels nearest", columns[:, 0])):
            for policy in ThresholdPolicy:

                def f1(y: np.ndarray) -> float:
                    return membership_metrics(scores, y, policy, bootstrap=0).f1  # noqa: B023

                null = [f1(rng.permutation(labels)) for _ in range(args.permutations)]
                print(
                    f"{name:11s} {what:16s} {policy:11s} {f1(labels):6.3f} "
                    f"{np.mean(null):19.3f} {np.quantile(null, 0.95):6.3f} "
                    f"{np.max(null):6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
