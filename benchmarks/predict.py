"""`gan-privacy predict` on every brainmri64 scenario, against the hidden labels.

    python benchmarks/predict.py [--data ../shared/data/brainmri64] [--features pixels]
        [--splits 200]

1. Each scenario's used and not_used images are split into a development half and an
   unlabelled half (100 + 100 each; 50 + 50 for the 100-member scenarios) by content
   hash, within each class (sorted by SHA-256, alternating),
   linked into folders of their own; predict runs on them as a user would run it, and
   the calls' F1 against the hidden labels (95 % interval over the unlabelled images,
   chance level) stands beside the development set's cross-fitted estimate.
2. The transfer rules (predict.TRANSFER_RULES) on `--splits` random stratified half
   splits of the same scores (the attacks are labels-blind, and the pool of images is
   the same in every split, so only the labels move): the mean F1 on the unlabelled
   half with its chance level, the mean development estimate, and the mean |estimate -
   F1|; then the same with a prevalence shift, the unlabelled half keeping only half of
   its members (a third of it members; the pool's scores are kept, a close
   approximation). `--splits 0` leaves this table out.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import numpy as np
from scenarios import DATA, SCENARIOS

from pytest_gan_privacy.metrics import bootstrap_f1_interval, chance_f1, stratified_folds
from pytest_gan_privacy.prediction import (
    TRANSFER_RULES,
    best_attack,
    cross_fitted_estimate,
    run_predict,
)
from pytest_gan_privacy.settings import AuditSettings, PredictSettings


def f1_of(labels: np.ndarray, calls: np.ndarray) -> float:
    tp = int((labels & calls).sum())
    return 2 * tp / max(int(labels.sum() + calls.sum()), 1)


def split_by_hash(root: Path, into: Path) -> dict[str, int]:
    """Link half of each class into dev/used, dev/not_used, the other half into
    candidates/; returns the candidates' hidden labels (file name -> 1: used)."""
    hidden = {}
    for role, label in (("used", 1), ("not_used", 0)):
        files = sorted(
            (hashlib.sha256(p.read_bytes()).hexdigest(), p)
            for p in (root / "real" / role).iterdir()
        )
        (into / "dev" / role).mkdir(parents=True)
        (into / "candidates").mkdir(exist_ok=True)
        for i, (_, path) in enumerate(files):
            if i % 2 == 0:
                os.symlink(path, into / "dev" / role / path.name)
            else:
                assert path.name not in hidden, f"{path.name} is in used and not_used"
                os.symlink(path, into / "candidates" / path.name)
                hidden[path.name] = label
    return hidden


def rule_table(dev_scores, cand_scores, dev_labels, cand_labels, splits, folds, shift):
    """Per rule: mean hidden F1, its chance level, mean estimate and mean |estimate -
    hidden F1| over random stratified half splits of all the scores."""
    scores = np.vstack([dev_scores, cand_scores])
    labels = np.r_[dev_labels, cand_labels]
    rng = np.random.default_rng(0)
    out = {name: [] for name in TRANSFER_RULES}
    for s in range(splits):
        halves = stratified_folds(labels, 2, int(rng.integers(2**31)))
        dev, unl = halves[0], halves[1]
        if shift:  # the unlabelled half keeps half of its members
            members = unl[labels[unl] == 1]
            unl = np.r_[
                rng.choice(members, len(members) // 2, replace=False), unl[labels[unl] == 0]
            ]
        for name, rule in TRANSFER_RULES.items():
            est = cross_fitted_estimate(scores[dev], labels[dev], rule, folds, s, 0).f1
            best = best_attack(scores[dev], labels[dev])
            calls = rule(scores[dev, best], labels[dev], scores[unl, best])
            hidden = f1_of(labels[unl], calls)
            out[name].append((hidden, chance_f1(labels[unl], calls), est, abs(est - hidden)))
    return {name: np.mean(rows, axis=0) for name, rows in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--features", default="mae")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--scenarios", nargs="*", default=SCENARIOS)
    args = parser.parse_args()
    rows, rules = [], {}
    for name in args.scenarios:
        root = args.data / name
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            hidden = split_by_hash(root, tmp)
            settings = PredictSettings(
                audit=AuditSettings(
                    generated=root / "generated",
                    used=tmp / "dev" / "used",
                    not_used=tmp / "dev" / "not_used",
                    features=args.features,
                    device=args.device,
                    no_cache=True,
                ),
                candidates=tmp / "candidates",
                out=tmp / "predictions.csv",
            )
            p = run_predict(settings)
        names = [Path(i).name for i in p.candidates.ids]
        truth = np.array([hidden[n] for n in names])
        calls = p.calls.astype(bool)
        ci = bootstrap_f1_interval(truth, calls, 1000, np.random.default_rng(0))
        m = p.estimate
        rows.append(
            (
                name,
                len(p.development),
                len(p.candidates),
                m.f1,
                m.f1_ci,
                m.chance_f1,
                f1_of(truth, calls),
                ci,
                chance_f1(truth, calls),
                p.attack,
                p.timings["total"],
            )
        )
        dev_labels = p.development.labels
        if args.splits == 0:
            continue
        rules[name] = [
            rule_table(
                p.development_scores,
                p.candidate_scores,
                dev_labels,
                truth,
                args.splits,
                settings.audit.folds,
                shift,
            )
            for shift in (False, True)
        ]
        print(f"{name}: done in {p.timings['total']:.1f} s", flush=True)

    print(
        f"\ngan-privacy predict, features {args.features}: a development half and an "
        "unlabelled half, split by content hash within each class"
    )
    print(
        f"{'scenario':11s} {'dev':>4s} {'unl':>4s} {'dev estimate F1':>15s} {'95% CI':>12s} "
        f"{'chance':>6s}   "
        f"{'hidden F1':>9s} {'95% CI':>12s} {'chance':>6s}  {'seconds':>7s}  attack"
    )
    for name, n_dev, n_unl, ef1, eci, ech, hf1, hci, hch, attack, secs in rows:
        print(
            f"{name:11s} {n_dev:4d} {n_unl:4d} {ef1:15.3f} {eci[0]:.3f}-{eci[1]:.3f} {ech:6.3f}   "
            f"{hf1:9.3f} {hci[0]:.3f}-{hci[1]:.3f} {hch:6.3f}  {secs:7.1f}  {attack}"
        )

    for shift, title in ((0, "same member fraction"), (1, "unlabelled half with 1/3 members")):
        print(
            f"\nTransfer rules over {args.splits} random half splits ({title}): "
            "hidden F1 (chance) / estimate / |estimate - hidden|"
        )
        print(f"{'scenario':11s} " + " ".join(f"{r:>32s}" for r in TRANSFER_RULES))
        for name, tables in rules.items():
            cells = [
                f"{h:.3f} ({c:.3f}) / {e:.3f} / {g:.3f}" for h, c, e, g in tables[shift].values()
            ]
            print(f"{name:11s} " + " ".join(f"{c:>32s}" for c in cells))


if __name__ == "__main__":
    main()
