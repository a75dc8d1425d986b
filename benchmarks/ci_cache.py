"""The cache between CI runs, as the GitHub Action keeps it: the demo's release audited
cold, then warm from the restored cache, then a new release of the same model family
(another generated set, the same candidates) from the previous release's cache.

    python benchmarks/ci_cache.py [--features mae] [--keep DIR]

Each audit is `gan-privacy audit` with the defaults (cache on) in a process of its own,
timed from the outside; the cache folder is restored by copying it, as actions/cache
does. Prints one row per run: seconds, the cache's hits and misses, the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_gan_privacy.synthetic import make_release

# the demo's release (examples/demo.py): 50 + 50 candidates, 500 generated images
DEMO = dict(n_members=50, n_non_members=50, n_generated=500)


def audit(release: Path, cache: Path, out: Path, features: str | None) -> dict:
    args = ["--generated", str(release / "generated"), "--used", str(release / "real/used")]
    args += ["--not-used", str(release / "real/not_used"), "--quiet"]
    args += ["--report", str(out / "r.html"), "--json", str(out / "r.json")]
    if features:
        args += ["--features", features]
    env = {**os.environ, "GAN_PRIVACY_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-3000:])
    data = json.loads((out / "r.json").read_text())
    return {"seconds": seconds, **data["cache"], "verdict": data["verdict"], "f1": data["f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help="default: the tool's (mae)")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="ci-cache-"))
    first = make_release(work / "release-1", leaky=True, seed=1, **DEMO)
    # the next release of the same model family: a new generated set, the same candidates
    second = make_release(work / "release-2", leaky=False, seed=1, **DEMO)
    runner_cache = work / "actions-cache"  # what actions/cache saves and restores
    rows = []

    def job(name: str, release: Path) -> None:
        cache = work / f"cache-{len(rows)}"  # a new runner: the cache restored, or none
        if runner_cache.exists():
            shutil.copytree(runner_cache, cache)
        row = audit(release, cache, work / f"out-{len(rows)}", args.features)
        rows.append((name, row))
        shutil.rmtree(runner_cache, ignore_errors=True)
        shutil.copytree(cache, runner_cache)  # the job's end: actions/cache saves it
        print(f"| {name} | {row['seconds']:.1f} | {row['hits']} | {row['misses']} | "
              f"{row['verdict']} | {row['f1']:.3f} |", flush=True)  # fmt: skip

    print("| CI run (2-core runner, a fresh process each) | seconds | cache hits | misses "
          "| verdict | F1 |\n|---|---|---|---|---|---|")  # fmt: skip
    job("release 1, cold (no cache)", first)
    job("release 1 again, cache restored (unchanged release)", first)
    job("release 2 (new generated set, same candidates), release 1's cache", second)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
