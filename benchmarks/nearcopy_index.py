"""The near-copy search through an index (shortlist.py): its recall of the exhaustive
scan's near-copies, and how its time grows with the generated images.

    python benchmarks/nearcopy_index.py recall [--features pixels] [--out DIR]
    python benchmarks/nearcopy_index.py growth [--generated 10000 25000 50000 100000]
                                               [--candidates 6000] [--exhaustive-up-to 10000]

recall: every ../shared/data/brainmri64 scenario and ones built from them (few copies,
planted canaries at the standard and hard levels on clean releases, twins, a look-alike
release), audited twice through the Python API with the defaults (cache on), once with
--near-copy-search exhaustive and once with index. Printed per scenario: the near-copies
the exhaustive scan lists (generated images over the applied threshold, with the
candidate each copies) and how many of them the index lists, the candidates flagged
both ways, the candidates whose best match is the same, the near-copy attack's AUC both
ways, and the pairs checked per generated image. (The near-copy scan does not depend
on --features; pixels saves the MAE's training.)

growth: the scan alone, from the generated side's features, at 64 px: generated and
candidates are augmented copies of ../shared/data/brainmri128's pool (every generated
image a near-copy of some candidates: the most pairs to check). Each size runs in a
process of its own; printed: seconds of the generated side's features, of the indexed
scan and (up to --exhaustive-up-to) of the exhaustive one with, of the generated images
over 0.85 in the exhaustive scan, the fraction still over it through the index (recall)
and the fraction matched to the same candidate, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads, as the command line does
import builders
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
POOL = DATA.parent / "brainmri128" / "pool"
SHARED = ("copies", "dcgan-100", "vae-100", "ddpm-100", "dcgan-1000", "disjoint")


def built(out: Path) -> list[Path]:
    return [
        builders.few_copies(DATA / "disjoint", out / "disjoint+few-copies-10", 10),
        builders.few_copies(DATA / "disjoint", out / "disjoint+canaries-100", 100),
        builders.few_copies(
            DATA / "dcgan-1000", out / "dcgan-1000+hard-canaries-100", 100, level="hard"
        ),
        builders.few_copies(DATA / "vae-100", out / "vae-100+canaries-30", 30),
        builders.twins(DATA / "copies", out / "copies+twins-20", 20),
        builders.look_alike(DATA / "disjoint", out / "disjoint+look-alike"),
    ]


def audit(root: Path, search: str, features: str | None):
    from pytest_gan_privacy.pipeline import run_audit
    from pytest_gan_privacy.settings import AuditSettings

    extra = {"features": features} if features else {}
    settings = AuditSettings(
        generated=root / "generated",
        used=root / "real" / "used",
        not_used=root / "real" / "not_used",
        near_copy_search=search,
        **extra,
    )
    return run_audit(settings)


def recall_row(name: str, exhaustive, indexed) -> str:
    e, i = exhaustive.near_copies, indexed.near_copies
    listed = set(zip(e.generated_index, e.candidate_index, strict=True))
    found = listed & set(zip(i.generated_index, i.candidate_index, strict=True))
    copied, copied_i = set(e.copied), set(i.copied)
    labels = exhaustive.candidates.labels
    best_e = exhaustive.attacks["near-copy"].scores
    best_i = indexed.attacks["near-copy"].scores
    same_best = np.mean(best_e.neighbour_indices[:, 0] == best_i.neighbour_indices[:, 0])
    recall = len(found) / len(listed) if listed else 1.0
    return (
        f"| {name} | {len(listed)} | {len(found)} | {recall:.4f} | {len(copied)} / "
        f"{len(copied & copied_i)} (+{len(copied_i - copied)}) | {same_best:.3f} | "
        f"{roc_auc_score(labels, best_e.scores):.4f} / {roc_auc_score(labels, best_i.scores):.4f}"
        f" | {e.threshold.applied:.3f} ({e.threshold.limited_by}) | "
        f"{indexed.timings.get('attacks near-copy', 0):.1f} / "
        f"{exhaustive.timings.get('attacks near-copy', 0):.1f} |"
    )


def recall(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        scenarios = [DATA / name for name in SHARED] + built(out)
        print(
            "| scenario | near-copies (exhaustive) | found by the index | recall | copied "
            "candidates: exhaustive / also by the index (+ more) | same best match | "
            "near-copy AUC exhaustive / index | threshold (set by) | scan s index / "
            "exhaustive (0: cached) |\n|---|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        worst = 1.0
        for root in scenarios:
            exhaustive = audit(root, "exhaustive", args.features)
            indexed = audit(root, "index", args.features)
            row = recall_row(root.name, exhaustive, indexed)
            worst = min(worst, float(row.split(" | ")[3]))
            print(row, flush=True)
        print(f"\nlowest recall: {worst:.4f}")


def one_size(generated: int, candidates: int, exhaustive: bool) -> dict:
    """The scan at one size, in this process (growth runs each size in its own)."""
    from PIL import Image

    from pytest_gan_privacy.nearcopies import augmented_copies, generated_side, robust_scan
    from pytest_gan_privacy.runtime import cpu_threads
    from pytest_gan_privacy.shortlist import indexed_scan

    paths = sorted(POOL.glob("*.png"))
    pool = np.stack([np.asarray(Image.open(p).convert("L").resize((64, 64))) for p in paths])
    images = torch.from_numpy(pool / 255.0).float()[:, None]
    at = torch.arange(max(generated, candidates)) % len(images)
    pixels = augmented_copies(images[at[:candidates]], seed=2)
    out = {}
    with cpu_threads():
        started = time.perf_counter()
        side = torch.cat(
            [
                generated_side(augmented_copies(images[at[i : i + 4096]], seed=1 + i))
                for i in range(0, generated, 4096)
            ]
        )
        out["features s"] = time.perf_counter() - started
        del images
        started = time.perf_counter()
        indexed = indexed_scan(side, pixels)
        out["index s"] = time.perf_counter() - started
        if exhaustive:
            started = time.perf_counter()
            full = robust_scan(side, pixels)
            out["exhaustive s"] = time.perf_counter() - started
            # generated images over 0.85 against some candidate: still over it through
            # the index, and matched to the same candidate (every source has 2-3
            # candidate copies here, near-equal matches of one generated image)
            listed = torch.nonzero(full.generated_best > 0.85).flatten()
            found = indexed.generated_best[listed] > 0.85
            same = indexed.generated_match[listed] == full.generated_match[listed]
            out["recall at 0.85"] = float(found.float().mean()) if len(listed) else 1.0
            out["same best match"] = float(same.float().mean()) if len(listed) else 1.0
    out["peak MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def growth(args) -> None:
    print(f"{args.candidates} candidates, 64 px; one process per size")
    print(
        "| generated | features s | index s | exhaustive s | recall at 0.85 | same best match "
        "| peak MiB |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    for g in args.generated:
        exhaustive = g <= args.exhaustive_up_to
        command = [sys.executable, __file__, "one", str(g), str(args.candidates)]
        result = subprocess.run(
            [*command, *(["--exhaustive"] if exhaustive else [])],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"| {g:,} | {r['features s']:.1f} | {r['index s']:.1f} | "
            f"{r.get('exhaustive s', float('nan')):.1f} | {r.get('recall at 0.85', '-')} | "
            f"{r.get('same best match', '-')} | "
            f"{r['peak MiB']:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("recall")
    r.add_argument("--features", default=None, help="default: the audit's (mae)")
    r.add_argument("--out", type=Path, default=None, help="where to build (default: temp)")
    g = sub.add_parser("growth")
    g.add_argument("--generated", type=int, nargs="+", default=[10000, 25000, 50000, 100000])
    g.add_argument("--candidates", type=int, default=6000)
    g.add_argument("--exhaustive-up-to", type=int, default=10000)
    one = sub.add_parser("one")
    one.add_argument("generated", type=int)
    one.add_argument("candidates", type=int)
    one.add_argument("--exhaustive", action="store_true")
    args = parser.parse_args()
    if args.what == "recall":
        recall(args)
    elif args.what == "growth":
        growth(args)
    else:
        print(json.dumps(one_size(args.generated, args.candidates, args.exhaustive)))


if __name__ == "__main__":
    main()
