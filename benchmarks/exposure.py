"""Exposed patients: verdicts on the shared scenarios and on built ones, and the gate's
false-FAIL rate under label shuffles.

    python benchmarks/exposure.py [--features pixels] [--shuffles 1000] [--out DIR]

1. Builds (benchmarks/builders.py) from ../shared/data/brainmri64: few-copies
   (k = 1, 3, 10, 30 memorised members) on `disjoint` and `dcgan-1000`, twins among the
   candidates of `disjoint`, `dcgan-1000` and `copies`, and a look-alike `disjoint`.
2. Audits every shared and built scenario with the defaults and prints: verdict and why,
   F1, exposure (members / non-members exposed, expected by chance, p), near-copies
   (generated images; members / non-members with one), the threshold and what set it,
   the replica test (members above every non-member's best match, its p-value), the
   power check per level, and, where the scenario has a memorised.txt (ddpm-100), how
   many of the members it names the near-copy listing names.
3. For each shared scenario, `--shuffles` label shuffles: which candidates are members is
   permuted (same counts), the attacks' labels-blind scores are kept, the near-copy
   flags are found again (the replica test reads the labels), and the gate is decided
   again (per-fold choice, F1 limit, exposure test, member near-copies). The fraction
   that FAILs is the gate's false-FAIL rate: a release whose labels carry no information
   should fail at most 1 % of the time. (On `copies` every shuffle keeps member
   near-copies at the labels-blind threshold, which fail by design; the rate without
   that rule is shown beside it.)
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from pytest_gan_privacy.results import result_json
from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import builders
import numpy as np

from pytest_gan_privacy.exposure import exposure
from pytest_gan_privacy.gate import GATE, best_per_fold
from pytest_gan_privacy.metrics import stratified_folds
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.replicas import replica_test
from pytest_gan_privacy.settings import AuditSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SHARED = ("copies", "dcgan-100", "vae-100", "dcgan-1000", "disjoint", "ddpm-100")


def build_all(out: Path) -> list[Path]:
    built = []
    for base in ("disjoint", "dcgan-1000"):
        for k in (1, 3, 10, 30):
            built.append(builders.few_copies(DATA / base, out / f"{base}+few-copies-{k}", k))
    for base in ("disjoint", "dcgan-1000", "copies"):
        built.append(builders.twins(DATA / base, out / f"{base}+twins-20", 20))
    built.append(builders.look_alike(DATA / "disjoint", out / "disjoint+look-alike"))
    return built


def audit(root: Path, features: str | None):
    extra = {"features": features} if features else {}
    return run_audit(
        AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
            **extra,
        )
    )


def _reason(failure: str) -> str:
    for words, short in (
        ("leakage F1", "F1"),
        ("have a near-copy", "member near-copies"),
        ("exposed at", "exposure"),
        ("near-copies of candidates", "near-copies"),
        ("power check", "power"),
    ):
        if words in failure:
            return short
    return failure


def row(name: str, result) -> str:
    d = result_json(result)
    e, nc, pc = d["exposure"], d["near_copies"], d["power_check"]
    levels = " / ".join(f"{v['fraction']:.2f}" for v in pc["levels"].values())
    why = ", ".join(_reason(f) for f in result.failures) or "-"
    rep = nc["replicas"]
    return (
        f"| {name} | {result.verdict} | {result.f1:.3f} | {e['members_exposed']} / "
        f"{e['non_members_exposed']} | {e['expected_by_chance']:.1f} | {e['p_value']:.2g} | "
        f"{nc['count']} ({nc['members_copied']} / {nc['non_members_copied']}) | "
        f"{nc['threshold']:.3f} ({nc['limited_by']}) | {rep['members_above']}, "
        f"p = {rep['p_value']:.2g} | {levels} | {why} |"
    )


def memorised_named(root: Path, result) -> str | None:
    """How many of the members in the scenario's memorised.txt the listing names."""
    listed = root / "memorised.txt"
    if not listed.exists():
        return None
    memorised = {line.split("\t")[0] for line in listed.read_text().splitlines() if line}
    named = memorised & set(result_json(result)["near_copies"]["copied"])
    return (
        f"{root.name}: the near-copy listing names {len(named)} of the {len(memorised)} "
        "members in memorised.txt"
    )


def shuffles(result, rounds: int, seed: int = 0) -> tuple[float, float, float]:
    """(false-FAIL rate, rate without the member near-copy rule, exposure alone)."""
    s = result.settings
    names = [n for n in result.attacks if n != GATE]
    columns = np.column_stack([result.attacks[n].scores.scores for n in names])
    best = result.attacks["near-copy"].scores.scores
    threshold = result.near_copies.threshold
    rng = np.random.default_rng(seed)
    labels = result.candidates.labels
    fails = fails_no_copy = exposed_only = 0
    for _ in range(rounds):
        shuffled = rng.permutation(labels)
        again = replace(threshold, replicas=replica_test(best, shuffled))
        copied = best > again.applied
        gate = best_per_fold(columns, shuffled, s.threshold_policy, s.folds, s.seed, 0)
        folds = stratified_folds(shuffled, s.folds, s.seed)
        e = exposure(columns, shuffled, folds, gate.chosen, copied)
        f1_fails, exposure_fails = gate.f1 > s.max_f1, e.p_value < s.exposure_alpha
        member_copy = bool((copied & (shuffled == 1)).any())
        fails += f1_fails or exposure_fails or member_copy
        fails_no_copy += f1_fails or exposure_fails
        exposed_only += exposure_fails
    return fails / rounds, fails_no_copy / rounds, exposed_only / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help="default: the audit's (mae)")
    parser.add_argument("--shuffles", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="where to build (default: temp)")
    parser.add_argument("--only-shared", action="store_true")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SHARED, default=SHARED, help="shared ones to run"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        scenarios = [DATA / name for name in args.scenarios]
        if not args.only_shared:
            scenarios += build_all(out)
        print(
            "| scenario | verdict | F1 | exposed m / nm | expected | p | near-copies (m / nm) "
            "| threshold (set by) | replicas, p | power exact / standard / hard | fails on |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        results = {}
        for root in scenarios:
            results[root.name] = result = audit(root, args.features)
            print(row(root.name, result), flush=True)
        for root in scenarios:
            if named := memorised_named(root, results[root.name]):
                print(named)
    if args.shuffles:
        print(
            f"\n| scenario | false-FAIL over {args.shuffles} shuffles | without the member "
            "near-copy rule | exposure check alone |\n|---|---|---|---|"
        )
        for name in args.scenarios:
            rates = shuffles(results[name], args.shuffles)
            print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
