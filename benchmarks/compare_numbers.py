"""Record the JSON of every brainmri64 scenario, or compare two recordings.

    python benchmarks/compare_numbers.py record OUT [--features pixels]
    python benchmarks/compare_numbers.py compare BEFORE AFTER [--mae-tolerance 0.03]

A refactoring must not move numbers: every attack's per-candidate scores (matched by
content hash, so names do not matter), its metrics and the verdict. Attacks on the
pixel-based spaces (pixels, patches, near-copy) must keep their scores and metrics to
within FLOAT_NOISE (a float32 similarity summed in another order, e.g. in a block of
other rows, moves by an ulp) and every count and verdict exactly; those of a trained
MAE (and the gate, when it chose one) may differ within `--mae-tolerance` in AUC and F1,
because bf16 training on a CPU is not bit-reproducible across thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("copies", "dcgan-100", "vae-100", "dcgan-1000", "disjoint", "ddpm-100")
FLOAT_NOISE = 1e-6  # float32 similarities near 1: a few ulps
METRICS = ("f1", "f1_ci", "chance_f1", "auc", "tpr_at_1pct_fpr", "confusion", "thresholds")


def record(out: Path, features: str) -> None:
    from pytest_gan_privacy.runtime import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
    from pytest_gan_privacy.pipeline import run_audit
    from pytest_gan_privacy.report import write_outputs
    from pytest_gan_privacy.settings import AuditSettings

    out.mkdir(parents=True, exist_ok=True)
    # the default path, cache on, in a folder of this recording's own: every number is
    # computed afresh, not read from a cache that code before this change wrote
    os.environ["GAN_PRIVACY_CACHE_DIR"] = tempfile.mkdtemp(prefix="compare-numbers-")
    for name in SCENARIOS:
        root = DATA / name
        settings = AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
            features=features,
        )
        result = run_audit(settings)
        write_outputs(result, None, out / f"{name}-{features}.json")
        print(f"{name}: {result.verdict} F1 {result.f1:.3f}")


def _scores(data: dict) -> dict[str, dict[str, float]]:
    """attack -> candidate hash -> score."""
    out: dict[str, dict[str, float]] = {}
    for row in data["candidates"]:
        for attack, score in row["attack_scores"].items():
            out.setdefault(attack, {})[row["sha256"]] = score
    return out


def _learned(attack: str, data: dict) -> bool:
    if attack == data["gating_attack"]:
        return any(_learned(a, data) for a in data["gate_choices"])
    return attack.split()[0] in ("mae", "vit")


def _close(before, after) -> bool:
    """Equal, floats within FLOAT_NOISE."""
    if isinstance(before, dict) and isinstance(after, dict):
        return before.keys() == after.keys() and all(_close(before[k], after[k]) for k in before)
    if isinstance(before, list) and isinstance(after, list):
        return len(before) == len(after) and all(map(_close, before, after))
    if isinstance(before, float) and isinstance(after, float):
        return abs(before - after) <= FLOAT_NOISE
    return before == after


def compare(before_dir: Path, after_dir: Path, tolerance: float) -> int:
    problems = 0
    print(
        f"{'file':24s} {'attack':28s} {'identical':>9s} {'max |d score|':>13s} "
        f"{'d AUC':>7s} {'d F1':>7s}"
    )
    for before_path in sorted(before_dir.glob("*.json")):
        after_path = after_dir / before_path.name
        if not after_path.is_file():
            print(f"{before_path.name}: missing in {after_dir}")
            problems += 1
            continue
        before, after = json.loads(before_path.read_text()), json.loads(after_path.read_text())
        sb, sa = _scores(before), _scores(after)
        for attack in before["attacks"]:
            if attack not in after["attacks"]:
                print(f"{before_path.name:24s} {attack:28s} missing after")
                problems += 1
                continue
            mb, ma = before["attacks"][attack], after["attacks"][attack]
            diff = max(abs(sb[attack][h] - sa[attack][h]) for h in sb[attack])
            same = diff <= FLOAT_NOISE and all(_close(mb[k], ma[k]) for k in METRICS)
            d_auc, d_f1 = ma["auc"] - mb["auc"], ma["f1"] - mb["f1"]
            if _learned(attack, before):
                ok = abs(d_auc) <= tolerance and abs(d_f1) <= tolerance
            else:
                ok = same
            problems += not ok
            print(
                f"{before_path.name:24s} {attack:28s} {str(same):>9s} {diff:13.2e} "
                f"{d_auc:+7.3f} {d_f1:+7.3f}{'' if ok else '  <-- moved'}"
            )
        for key in ("verdict", "near_copies", "power_check"):
            b, a = before[key], after[key]
            if key == "near_copies":  # keys added later are not a change of numbers
                a = {k: v for k, v in a.items() if k in b}
            if not _close(b, a):
                print(f"{before_path.name}: {key} differs: {b!r:.80} -> {a!r:.80}")
                problems += 1
    print(f"\n{problems} difference(s) beyond the rules")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--features", default="mae")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--mae-tolerance", type=float, default=0.03)
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.features)
        return 0
    return compare(args.before, args.after, args.mae_tolerance)


if __name__ == "__main__":
    sys.exit(main())
