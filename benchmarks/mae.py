"""The MAE features on every scenario of ../shared/data/brainmri64, and how fast they are.

    python benchmarks/mae.py [--data ../shared/data/brainmri64] [--device auto]
                             [--mae-preset auto] [--mae-epochs N] [--scenarios copies ...]

For each scenario, the default audit (features "mae", MAE training included) runs with
an empty cache, then again with the cache it filled. Printed: AUC, TPR at 1 % FPR and
the cross-fitted F1 with its 95 % interval for pixel nearest-neighbour, local-structure
nearest-neighbour, the MAE attacks and the gate; the seconds
of MAE training (decoding its images included), of the whole audit and of the re-run;
the MAE encoder's throughput (images/s, decoded pixels already in memory) and that
throughput as a fraction of the machine's matrix-multiply peak, measured in this run in
the same precision (model FLOPs per image, counted by torch's FlopCounterMode, x
images/s / peak FLOP/s): in the precision the audit uses (bf16 where the hardware has
it) and in float32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import torch
from torch.utils.flop_counter import FlopCounterMode

from pytest_gan_privacy.cache import TensorCache
from pytest_gan_privacy.encoders import LEARNED
from pytest_gan_privacy.gate import GATE
from pytest_gan_privacy.images import load_image_set, load_pixels
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.runtime import resolve_device
from pytest_gan_privacy.settings import AuditSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("copies", "dcgan-100", "vae-100", "dcgan-1000", "disjoint", "ddpm-100")
ATTACKS = {
    "pixels NN": "pixels nearest-neighbour",
    "patches NN": "patches nearest-neighbour",
    "MAE NN": "mae nearest-neighbour",
    "MAE calibrated": "mae calibrated",
    "MAE retrieval": "mae retrieval",
    "gate": GATE,
}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds=2.0) -> float:
    """Measured FLOP/s of square matrix multiplies: the machine's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    _sync(device)
    return 2 * n**3 * done / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_speed(encoder, pixels: torch.Tensor, batch: int, device: torch.device, seconds=3.0):
    """(images/s, FLOPs per image) of encode_batch on decoded pixels."""
    batches = [pixels[i : i + batch].to(device) for i in range(0, len(pixels), batch)]
    batches = [b for b in batches if len(b) == batch] or batches[:1]
    with FlopCounterMode(display=False) as counter:
        encoder.encode_batch(batches[0])
    flops = counter.get_total_flops() / len(batches[0])
    for b in batches[:3]:  # warm-up
        encoder.encode_batch(b)
    _sync(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for b in batches:
            encoder.encode_batch(b)
            done += len(b)
    _sync(device)
    return done / (time.perf_counter() - started), flops


def settings_for(root: Path, args, cache_dir: Path) -> AuditSettings:
    extra = {"mae_epochs": args.mae_epochs} if args.mae_epochs else {}
    return AuditSettings(
        generated=root / "generated",
        used=root / "real" / "used",
        not_used=root / "real" / "not_used",
        device=args.device,
        mae_preset=args.mae_preset,
        cache_dir=cache_dir,
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mae-preset", default="auto")
    parser.add_argument("--mae-epochs", type=int, default=None)
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    peaks = {
        "float32": matmul_peak(device, torch.float32),
        "bf16": matmul_peak(device, torch.bfloat16),
    }
    print(
        f"device {device}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.2f}; matrix-multiply peak: float32 "
        f"{peaks['float32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s\n"
    )
    print(
        "| scenario | attack | AUC | TPR@1%FPR | F1 [95% CI] |\n|---|---|---|---|---|",
        flush=True,
    )
    timing_rows = []
    for name in args.scenarios:
        root = args.data / name
        if not root.is_dir():
            print(f"| {name} | missing: {root} | | | |")
            continue
        with tempfile.TemporaryDirectory() as cache_dir:
            settings = settings_for(root, args, Path(cache_dir))
            load = os.getloadavg()[0]
            result = run_audit(settings)
            started = time.perf_counter()
            rerun = run_audit(settings)
            rerun_seconds = time.perf_counter() - started
            assert rerun.gate.auc == result.gate.auc
            for label, attack in ATTACKS.items():
                m = result.attacks[attack].metrics
                tpr = "n/a" if m.tpr_at_1pct_fpr is None else f"{m.tpr_at_1pct_fpr:.3f}"
                print(
                    f"| {name} | {label} | {m.auc:.3f} | {tpr} | "
                    f"{m.f1:.3f} [{m.f1_ci[0]:.3f}-{m.f1_ci[1]:.3f}] |",
                    flush=True,
                )
            # the encoder as the audit built it: its weights come from the cache
            encoder = LEARNED["mae"](settings, device, TensorCache(Path(cache_dir)))
            generated = load_image_set(settings.generated, "generated")
            encoder.fit(generated, device, lambda *_: None)
            pixels = load_pixels(generated, encoder.image_size, settings.batch_size)
            speeds = {}
            used = encoder.bf16
            for encoder.bf16 in sorted({False, used}):  # the precision used, and float32
                with torch.inference_mode():
                    speed, flops = encoder_speed(encoder, pixels, settings.batch_size, device)
                speeds["bf16" if encoder.bf16 else "float32"] = (speed, flops)
            timing_rows.append((name, result, rerun_seconds, speeds, load))
    print(
        "\n| scenario | MAE training s | audit s | cached re-run s | MAE encoder: images/s, "
        "GFLOP/image, fraction of that precision's peak | load |\n|---|---|---|---|---|---|"
    )
    for name, result, rerun_seconds, speeds, load in timing_rows:
        speed_text = "; ".join(
            f"{precision} {speed:.0f}/s, {flops / 1e9:.3f}, {flops * speed / peaks[precision]:.0%}"
            for precision, (speed, flops) in sorted(speeds.items())
        )
        print(
            f"| {name} | {result.timings['fit mae']:.1f} | {result.seconds:.1f} | "
            f"{rerun_seconds:.1f} | {speed_text} | {load:.2f} |"
        )
    mae = timing_rows[0][1].encoder["mae"] if timing_rows else {}
    print(f"\nMAE: {mae}")


if __name__ == "__main__":
    main()
