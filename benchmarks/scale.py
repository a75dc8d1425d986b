"""Audits at ImageCLEF size and beyond: seconds per stage and peak memory, cold and warm.

    python benchmarks/scale.py imageclef [--generated 10000 --candidates 6000] [--features mae]
    python benchmarks/scale.py curve [--sizes 20000 200000] [--candidates 60] [--features pixels]

`imageclef` builds the ImageCLEFmed GANs 2024 sizes at 256 px from
../shared/data/brainmri128/pool (2,857 real slices, enlarged to 256 px; generated
images and candidates are augmented copies: flips, shifts, contrast, noise), which is
fine for timing, not for the numbers. `curve` builds N generated images at 64 px by
augmenting a brainmri64 scenario's generated images cheaply (benchmarks/memory.py) and
audits them against a few of its real candidates, so that the near-copy scan (generated
x candidates) stays short and memory is what is measured.

Each audit is the command line in a child process, run with an empty cache ("cold")
and again with the cache it filled ("warm"). Printed: the seconds of every stage (the
JSON's timings), the total, and the child's peak resident memory (its largest process,
from wait4). Everything is built in a temporary folder (or --keep DIR); the shared data
is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import augment, make_generated, peak_of  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
POOL = SHARED / "brainmri128" / "pool"
SCENARIO = SHARED / "brainmri64" / "dcgan-1000"


def enlarged(path: Path, size: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((size, size), Image.BICUBIC))


def build_imageclef(root: Path, generated: int, candidates: int, size: int = 256) -> Path:
    """generated/ and real/{used,not_used} (candidates / 2 each) at `size` px, made from
    the brainmri128 pool: sources are split in two halves (members' sources also feed
    the generated images), every image an augmented copy of its source."""
    sources = [enlarged(p, size) for p in sorted(POOL.glob("*.png"))]
    half = len(sources) // 2
    members, others = sources[:half], sources[half:]
    rng = np.random.default_rng(0)
    for folder, pool, n in (
        (root / "real" / "used", members, candidates // 2),
        (root / "real" / "not_used", others, candidates // 2),
        (root / "generated", members, generated),
    ):
        folder.mkdir(parents=True)
        for i in range(n):
            image = augment(pool[i % len(pool)], rng)
            Image.fromarray(image).save(folder / f"{i:06d}.png")
    return root


def build_curve_candidates(root: Path, candidates: int) -> Path:
    """A few of the brainmri64 scenario's real candidates (candidates / 2 per class)."""
    for role in ("used", "not_used"):
        folder = root / "real" / role
        folder.mkdir(parents=True)
        for path in sorted((SCENARIO / "real" / role).glob("*.png"))[: candidates // 2]:
            shutil.copy(path, folder / path.name)
    return root


def audit(root: Path, generated: Path, cache: Path, extra: list[str]) -> tuple[dict, float, float]:
    out = root / "out"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", "--quiet"]
    cmd += ["--generated", str(generated), "--used", str(root / "real" / "used")]
    cmd += ["--not-used", str(root / "real" / "not_used"), "--cache-dir", str(cache)]
    cmd += ["--report", str(out / "report.html"), "--json", str(out / "result.json"), *extra]
    peak, seconds = peak_of(cmd)
    timings = json.loads((out / "result.json").read_text())["timings"]
    return timings, peak, seconds


def table(rows: list[tuple[str, dict, float]]) -> None:
    stages = list(dict.fromkeys(k for _, t, _ in rows for k in t if k != "total"))
    short = [s.replace("attacks ", "att ").replace("encode ", "enc ") for s in stages]
    print(f"{'run':24s} " + " ".join(f"{s[:11]:>11s}" for s in short) + "   total  peak MiB")
    for name, timings, peak in rows:
        cells = " ".join(f"{timings.get(s, 0):11.1f}" for s in stages)
        print(f"{name:24s} {cells} {timings['total']:7.1f} {peak:9.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("imageclef", "curve"))
    parser.add_argument("--generated", type=int, default=10000)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--features", default=None, help="default: mae (imageclef), pixels")
    parser.add_argument("--keep", type=Path, default=None, help="build here and keep it")
    parser.add_argument("--warm-only-last", action="store_true")
    args, extra = parser.parse_known_args()
    features = args.features or ("mae" if args.what == "imageclef" else "pixels")
    extra = ["--features", features, *extra]
    tmp = tempfile.mkdtemp(prefix="gan-audit-scale-") if args.keep is None else args.keep
    root = Path(tmp)
    print(f"CPUs: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}")
    rows = []
    try:
        if args.what == "imageclef":
            candidates = args.candidates or 6000
            if not (root / "generated").is_dir():
                build_imageclef(root, args.generated, candidates)
            print(f"{args.generated} generated, {candidates} candidates, 256 px, {features}")
            for run in ("cold", "warm"):
                timings, peak, _ = audit(root, root / "generated", root / "cache", extra)
                rows.append((f"{args.generated} gen {run}", timings, peak))
                table(rows[-1:])
        else:
            candidates = args.candidates or 60
            if not (root / "real").is_dir():
                build_curve_candidates(root, candidates)
            largest = root / "all"
            if not largest.is_dir():
                make_generated(SCENARIO / "generated", largest, max(args.sizes))
            print(f"{candidates} candidates, 64 px, {features}")
            for n in sorted(args.sizes):
                generated = root / f"gen-{n}"
                if not generated.is_dir():
                    generated.mkdir()
                    for i in range(n):
                        os.link(largest / f"{i:06d}.png", generated / f"{i:06d}.png")
                for run in ("cold", "warm"):
                    cache = root / f"cache-{n}"
                    timings, peak, _ = audit(root, generated, cache, extra)
                    rows.append((f"{n} gen {run}", timings, peak))
                    table(rows[-1:])
        print()
        table(rows)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
