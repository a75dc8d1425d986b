"""Peak memory of a whole audit against the number of generated images.

    python benchmarks/memory.py --data ../shared/data/brainmri64/dcgan-1000 [--sizes 2000 20000]

Makes N generated images by augmenting a scenario's generated images (flips, shifts of a
few pixels, contrast, brightness, noise) in a temporary folder, then runs the command
line audit of them against the scenario's real candidates in a child process, three
times: without the cache, with an empty cache and with a warm one. Prints the child's
peak resident memory (the largest process of its tree, from wait4) and its seconds.

Memory should grow with N only by the generated images' features (N x D float32; D is
4,096 for 64 px pixel features), never by N x candidates: similarity is computed in
blocks, and pixels are decoded in batches. Nothing is written outside the temporary
folder (the shared data is only read).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64" / "dcgan-1000"


def augment(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = source.astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.roll(img, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_generated(source_folder: Path, folder: Path, n: int, seed: int = 0) -> Path:
    """n augmented copies of the source images (cycled), as PNG files in `folder`."""
    sources = [np.asarray(Image.open(p).convert("L")) for p in sorted(source_folder.glob("*.png"))]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(augment(sources[i % len(sources)], rng)).save(folder / f"{i:06d}.png")
    return folder


def peak_of(cmd: list[str]) -> tuple[float, float]:
    """Run a command; its peak RSS in MiB (the largest process of its tree, from wait4:
    Unix only) and its seconds."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: a leak, a valid result
            errors.seek(0)
            sys.exit(f"{' '.join(cmd)} failed:\n{errors.read().decode()}")
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a brainmri64 scenario")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    used, not_used = args.data / "real" / "used", args.data / "real" / "not_used"
    n_candidates = len(list(used.glob("*.png"))) + len(list(not_used.glob("*.png")))

    with tempfile.TemporaryDirectory(prefix="gan-audit-memory-") as tmp:
        tmp = Path(tmp)
        largest = make_generated(args.data / "generated", tmp / "all", max(args.sizes))
        baseline, _ = peak_of([sys.executable, "-c", "import pytest_gan_privacy.pipeline"])
        print(f"candidates: {n_candidates}; importing the audit alone peaks at {baseline:.0f} MiB")
        print(
            f"{'generated':>9s} {'gen x cand':>11s} {'run':>11s} {'peak MiB':>9s} {'seconds':>8s}"
        )
        for n in sorted(args.sizes):
            generated = tmp / f"gen-{n}"
            generated.mkdir()
            for i in range(n):  # the first n images, hard-linked
                os.link(largest / f"{i:06d}.png", generated / f"{i:06d}.png")
            cmd = [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", "--quiet"]
            cmd += ["--generated", str(generated), "--used", str(used), "--not-used", str(not_used)]
            cmd += ["--report", str(tmp / f"report-{n}.html")]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            for run, extra in (
                ("no cache", ["--no-cache"]),
                ("cold cache", ["--cache-dir", str(tmp / f"cache-{n}")]),
                ("warm cache", ["--cache-dir", str(tmp / f"cache-{n}")]),
            ):
                peak, seconds = peak_of(cmd + extra)
                print(f"{n:9d} {n * n_candidates:11,d} {run:>11s} {peak:9.0f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
