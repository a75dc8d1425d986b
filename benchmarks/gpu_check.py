"""The GPU path, measured in one run: what `benchmarks/gpu_check.sh` runs.

    python benchmarks/gpu_check.py [--device cuda] [--small] [--out DIR]

A lent GPU machine receives the repository only (no ../shared, no internet), so every
image here is made by `pytest_gan_privacy.synthetic`. Steps, each with its own time
limit so that one failure does not eat the machine's minutes, and the table printed
whatever failed:

1. the tests marked `cuda` (they skip without CUDA);
2. a default audit (MAE features, the `gpu` preset where the device is CUDA) of
   10,000 generated images at 256 px against 500 + 500 candidates: seconds per stage,
   the near-copy scan among them, and the device's peak memory;
3. the device's bf16 (where the audit uses it) and float32 matrix-multiply peak,
   measured here;
4. the MAE encoder's and the MAE training step's throughput (images/s) and the fraction
   of that peak they reach (model FLOPs counted by torch's FlopCounterMode).

`--small` (with `--device cpu`) is the rehearsal on this repository's 2-core CPU: the
same steps on 600 generated images at 64 px and the `cpu` preset, in about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads (runtime.py)
import torch
from mae import _sync, matmul_peak
from torch.utils.flop_counter import FlopCounterMode

from pytest_gan_privacy.mae import PRESETS, build_model
from pytest_gan_privacy.runtime import autocast, resolve_device, use_bf16
from pytest_gan_privacy.synthetic import make_release

ROOT = Path(__file__).resolve().parents[1]
FULL = dict(n_generated=10_000, n_members=500, n_non_members=500, size=256, preset="gpu")
SMALL = dict(n_generated=600, n_members=60, n_non_members=60, size=64, preset="cpu")
BUDGET = 450  # seconds for all steps: gpu_check.sh stops the run at 480 s


def run_cuda_tests(limit: float) -> str:
    """The tests marked `cuda`, in a child process with its own time limit."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=limit, check=False
    )
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if done.returncode not in (0, 5):  # 5: nothing collected
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
        raise RuntimeError(f"cuda tests: {last}")
    return last


def run_default_audit(release: Path, device: str, preset: str, limit: float) -> dict:
    """The command line's default audit (MAE features), its JSON's timings."""
    report = release / "report.html"
    command = [
        sys.executable, "-m", "pytest_gan_privacy.cli", "audit",
        "--generated", str(release / "generated"),
        "--used", str(release / "real" / "used"),
        "--not-used", str(release / "real" / "not_used"),
        "--device", device, "--mae-preset", preset, "--no-cache", "--quiet",
        "--report", str(report),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 0 pass, 1 fail: both are a measured audit
        raise RuntimeError(f"audit exit {done.returncode}: {done.stderr[-1500:]}")
    data = json.loads(report.with_suffix(".json").read_text())
    return {"seconds": seconds, "verdict": data["verdict"], "timings": data["timings"]}


def model_speed(config, device: torch.device, batch: int, train: bool, seconds: float):
    """(images/s, FLOPs per image, bf16 used) of the MAE's encoder or its training step."""
    model = build_model(config, seed=0).to(device)
    bf16 = use_bf16(device)
    pixels = torch.rand(batch, 1, config.img_size, config.img_size, device=device)
    noise = torch.rand(batch, config.num_patches, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as mae.train
    # as the audit runs them: training under autocast (plain attention on a CPU), the
    # encoder with fused attention on bf16 weights (encoders.MAEEncoder)
    model.use_fused_attention(not train or device.type == "cuda")
    encoder = model if not bf16 or train else model.to(torch.bfloat16)

    def step():
        if train:
            with autocast(device, bf16):
                model.loss(pixels, noise).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                encoder.patch_tokens(pixels.to(encoder.cls_token.dtype))

    model.train(train)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops() / batch
    for _ in range(2):
        step()
    _sync(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += batch
    _sync(device)
    return done / (time.perf_counter() - started), flops, bf16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="the CPU rehearsal's sizes")
    parser.add_argument("--out", type=Path, default=None, help="keep the data here")
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    rows: list[tuple[str, str]] = []
    failed = 0

    def step(name: str, work) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            value = work()
        except Exception as exc:  # noqa: BLE001 - every step reports, the table prints
            traceback.print_exc()
            failed += 1
            value = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows.append((name, f"{value} ({time.perf_counter() - started:.0f} s)"))
        print(f"{name}: {rows[-1][1]}", flush=True)

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, sizes {sizes}", flush=True)
    deadline = time.perf_counter() + BUDGET
    step("tests marked cuda", lambda: run_cuda_tests(limit=90))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        release = folder / "release"

        def make():
            if not (release / "generated").is_dir():
                make_release(
                    release, leaky=True, n_members=sizes["n_members"],
                    n_non_members=sizes["n_non_members"], n_generated=sizes["n_generated"],
                    size=sizes["size"], seed=1,
                )  # fmt: skip
            return f"{sizes['n_generated']} generated at {sizes['size']} px"

        step("phantom release", make)

        def audit():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            # what is left, less what the peak and speed steps need after it
            left = max(30.0, deadline - time.perf_counter() - 40)
            a = run_default_audit(release, str(device), sizes["preset"], limit=left)
            stages = ", ".join(f"{k} {v:.0f}" for k, v in a["timings"].items() if v >= 0.5)
            return f"{a['verdict']} in {a['seconds']:.0f} s; stages (s): {stages}"

        step(f"default audit, {sizes['preset']} preset", audit)
    peaks = {}
    # bf16 only where the audit uses it: emulated bf16 on a CPU is slow and not used
    for dtype in [torch.bfloat16] * use_bf16(device) + [torch.float32]:
        key = str(dtype).removeprefix("torch.")
        n = 8192 if device.type == "cuda" else 2048

        def peak(dtype=dtype, key=key, n=n):
            peaks[key] = matmul_peak(device, dtype, n=n, seconds=2.0)
            return f"{peaks[key] / 1e12:.2f} TFLOP/s"

        step(f"matmul peak {key}", peak)
    config = PRESETS[sizes["preset"]]
    batch = config.batch_size if device.type == "cuda" else 32
    for label, train in (("MAE encoder", False), ("MAE training step", True)):

        def speed(train=train):
            images_s, flops, bf16 = model_speed(config, device, batch, train, seconds=5.0)
            key = "bfloat16" if bf16 else "float32"
            fraction = flops * images_s / peaks[key] if key in peaks else float("nan")
            return (
                f"{images_s:,.0f} images/s, {flops / 1e9:.2f} GFLOP/image, "
                f"{fraction:.0%} of the {key} peak"
            )

        step(f"{label} ({sizes['preset']} preset, batch {batch})", speed)
    print("\n| step | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nload average {os.getloadavg()[0]:.2f}; {failed} step(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
