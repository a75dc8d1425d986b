"""The near-copy scan and threshold's speed, with and without the bf16 screen.

    python benchmarks/nearcopy_scan.py [--generated 10000] [--candidates 1000]

Generated images and candidates are augmented copies of ../shared/data/brainmri128's
pool at 64 px (the scan's working size), so many generated images have a close match,
as in a leaky release. Printed for each mode: the seconds of `robust_scan` (generated x
candidates) and of `real_pair_reference` (candidates x candidates), and the largest
difference of the screened results from the float32 ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads, as the command line does
import numpy as np
import torch
from PIL import Image

from pytest_gan_privacy.nearcopies import (
    augmented_copies,
    generated_side,
    real_pair_reference,
    robust_scan,
    screens,
)
from pytest_gan_privacy.runtime import cpu_threads

POOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri128" / "pool"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=10000)
    parser.add_argument("--candidates", type=int, default=1000)
    args = parser.parse_args()
    paths = sorted(POOL.glob("*.png"))
    pool = np.stack([np.asarray(Image.open(p).convert("L").resize((64, 64))) for p in paths])
    images = torch.from_numpy(pool / 255.0).float()[:, None]
    at = torch.arange(max(args.generated, args.candidates)) % len(images)
    candidates = augmented_copies(images[at[: args.candidates]], seed=2)
    side = generated_side(augmented_copies(images[at[: args.generated]], seed=1))
    print(
        f"{args.generated} generated x {args.candidates} candidates; bf16 screen available: "
        f"{screens(torch.device('cpu'))}"
    )
    results = {}
    with cpu_threads():
        for screen in (True, False):
            started = time.perf_counter()
            scan = robust_scan(side, candidates, screen=screen)
            middle = time.perf_counter()
            reference = real_pair_reference(candidates, screen=screen)
            done = time.perf_counter()
            results[screen] = scan, reference
            name = "bf16 screen" if screen else "float32    "
            print(
                f"{name}: scan {middle - started:6.1f} s, threshold's reference "
                f"{done - middle:6.1f} s",
                flush=True,
            )
    (fast, ref_fast), (exact, ref_exact) = results[True], results[False]
    differences = [
        (fast.candidate_top - exact.candidate_top).abs().max(),
        (fast.generated_best - exact.generated_best).abs().max(),
    ]
    print(
        f"largest difference of the screened scan: {max(map(float, differences)):.1e}; "
        f"same matches: {torch.equal(fast.candidate_top_index, exact.candidate_top_index)}"
        f" and {torch.equal(fast.generated_match, exact.generated_match)}; reference "
        f"{ref_fast[0]:.7f} vs {ref_exact[0]:.7f}, pair {ref_fast[1]} vs {ref_exact[1]}"
    )


if __name__ == "__main__":
    main()
