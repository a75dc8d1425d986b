"""Audit every scenario of ../shared/data/brainmri64 with the defaults and print tables.

    python benchmarks/scenarios.py [--data ../shared/data/brainmri64] [--features mae]

1. Every attack on every scenario: cross-fitted F1 with its 95 % interval and chance
   level, AUC and TPR at 1 % FPR. The gate's row is marked.
2. Per scenario: the verdict with the defaults, the attacks the gate chose per fold,
   near-copies, the power check, and total seconds.
3. Seconds each stage added (encoding and attacks per feature space, near-copies...).

The cache is off unless --cache is given, so the times are those of a first run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_gan_privacy.results import result_json
from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.settings import AuditSettings, default_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("copies", "dcgan-100", "vae-100", "dcgan-1000", "disjoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--features", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", action="store_true", help="use the feature cache")
    parser.add_argument("--scenarios", nargs="*", default=SCENARIOS)
    args = parser.parse_args()
    extra = {"features": args.features} if args.features else {}
    results = {}
    for name in args.scenarios:
        root = args.data / name
        if not root.is_dir():
            print(f"{name}: missing ({root})")
            continue
        results[name] = run_audit(
            AuditSettings(
                generated=root / "generated",
                used=root / "real" / "used",
                not_used=root / "real" / "not_used",
                device=args.device,
                no_cache=not args.cache,
                **extra,
            )
        )

    print(f"\nEvery attack (limit {default_of('max_f1')}; * = the gate)")
    print(
        f"{'scenario':11s} {'attack':28s} {'F1':>6s} {'95% CI':>12s} {'chance':>6s} "
        f"{'AUC':>6s} {'TPR@1%':>6s}"
    )
    for name, result in results.items():
        for attack, a in result.attacks.items():
            m = a.metrics
            tpr = "n/a" if m.tpr_at_1pct_fpr is None else f"{m.tpr_at_1pct_fpr:.3f}"
            mark = " *" if attack == result.gating_attack else ""
            print(
                f"{name:11s} {attack + mark:28s} {m.f1:6.3f} {m.f1_ci[0]:.3f}-{m.f1_ci[1]:.3f} "
                f"{m.chance_f1:6.3f} {m.auc:6.3f} {tpr:>6s}"
            )

    print("\nVerdicts with the defaults")
    print(
        f"{'scenario':11s} {'verdict':20s} {'F1':>6s} {'near-copies (members/non)':>26s} "
        f"{'threshold':>9s} {'power':>6s} {'seconds':>7s}  gate's choice per fold"
    )
    for name, result in results.items():
        d = result_json(result)
        nc, pc = d["near_copies"], d["power_check"]
        print(
            f"{name:11s} {result.verdict:20s} {result.f1:6.3f} "
            f"{nc['count']:>10d} ({nc['members_copied']:>3d}/{nc['non_members_copied']:<3d})"
            f"{'':9s} {nc['threshold']:9.3f} {pc['found']:>3d}/{pc['planted']:<2d} "
            f"{result.seconds:7.1f}  {', '.join(result.gate_choices)}"
        )

    stages = sorted({s for r in results.values() for s in r.timings if s != "total"})
    print("\nSeconds per stage")
    print(f"{'stage':22s} " + " ".join(f"{n:>10s}" for n in results))
    for stage in stages:
        print(
            f"{stage:22s} " + " ".join(f"{r.timings.get(stage, 0):10.2f}" for r in results.values())
        )
    print(f"{'total':22s} " + " ".join(f"{r.seconds:10.2f}" for r in results.values()))


if __name__ == "__main__":
    main()
