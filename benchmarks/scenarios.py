"""Audit every scenario of ../shared/data/brainmri64 with the defaults and print a table.

    python benchmarks/scenarios.py [--features pixels] [--data ../shared/data/brainmri64]

One row per scenario and attack: cross-fitted F1 with its 95 % interval and chance
level, AUC, TPR at 1 % FPR, the verdict against the limit and the seconds taken.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_gan_privacy.audit import run_audit
from pytest_gan_privacy.settings import AuditSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("copies", "dcgan-100", "vae-100", "dcgan-1000", "disjoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--features", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    extra = {"features": args.features} if args.features else {}
    print(
        f"{'scenario':11s} {'attack':22s} {'F1':>6s} {'95% CI':>13s} {'chance':>6s} "
        f"{'AUC':>6s} {'TPR@1%':>6s} {'verdict':>7s} {'seconds':>7s}"
    )
    for name in SCENARIOS:
        root = args.data / name
        if not root.is_dir():
            print(f"{name:11s} (missing: {root})")
            continue
        settings = AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
            device=args.device,
            **extra,
        )
        result = run_audit(settings)
        for attack, a in result.attacks.items():
            m = a.metrics
            tpr = "n/a" if m.tpr_at_1pct_fpr is None else f"{m.tpr_at_1pct_fpr:.3f}"
            gate = attack == result.gating_attack
            verdict = result.verdict if gate else ""
            print(
                f"{name:11s} {attack + (' *' if gate else ''):22s} {m.f1:6.3f} "
                f"{m.f1_ci[0]:6.3f}-{m.f1_ci[1]:.3f} {m.chance_f1:6.3f} {m.auc:6.3f} {tpr:>6s} "
                f"{verdict:>7s} {result.seconds if gate else 0:7.1f}",
                flush=True,
            )
    print("* the attack the gate uses; limit", AuditSettings.__dataclass_fields__["max_f1"].default)


if __name__ == "__main__":
    main()
