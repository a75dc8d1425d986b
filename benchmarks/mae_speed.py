"""The `cpu` MAE's encoder and training step: images/s and the fraction of the bf16 peak,
as the audit runs them and as they ran before.

    python benchmarks/mae_speed.py [--rounds 4]

Encoder (batch 64, the audit's): bf16 autocast on float32 weights (before) against a bf16
copy of the weights (after, encoders.MAEEncoder). Training step (batch 128): AdamW with
its foreach implementation (before) against the fused one (after, mae.train). Both with
random weights (speed does not depend on them); the variants alternate, `--rounds` times,
and the median is printed with every run, since a shared machine's speed drifts. FLOPs
per image from torch's FlopCounterMode; the peaks are square matrix multiplies measured
in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads, as the command line does
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pytest_gan_privacy.mae import PRESETS, augment, build_model
from pytest_gan_privacy.runtime import autocast, cpu_threads

CONFIG = PRESETS["cpu"]


def peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    return done * 2 * n**3 / (time.perf_counter() - started)


def encoders():
    model = build_model(CONFIG, 0).eval()
    model.use_fused_attention(True)
    weights16 = build_model(CONFIG, 0).eval().to(torch.bfloat16)
    weights16.use_fused_attention(True)

    def before(x):
        with torch.inference_mode(), autocast(x.device, True):
            tokens = model.patch_tokens(x)
        return F.layer_norm(tokens.float(), tokens.shape[-1:]).flatten(1)

    def after(x):
        with torch.inference_mode():
            tokens = weights16.patch_tokens(x.to(torch.bfloat16))
        return F.layer_norm(tokens.float(), tokens.shape[-1:]).flatten(1)

    return before, after


def trainer(fused: bool):
    model = build_model(CONFIG, 0).train()
    model.use_fused_attention(False)  # as mae.train on a CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), fused=fused)
    generator = torch.Generator().manual_seed(0)

    def step(x):
        x = augment(x, generator)
        noise = torch.rand(len(x), CONFIG.num_patches, generator=generator)
        with autocast(x.device, True):
            loss = model(x, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def rate(fn, pixels: torch.Tensor, batch: int, seconds: float = 3.0) -> float:
    batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
    fn(batches[0])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for x in batches:
            fn(x)
            done += batch
    return done / (time.perf_counter() - started)


def flops_per_image(fn, pixels: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(pixels)
    return counter.get_total_flops() / len(pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    pixels = torch.rand(512, 1, CONFIG.img_size, CONFIG.img_size)
    with cpu_threads():
        bf16_peak, f32_peak = peak(torch.bfloat16), peak(torch.float32)
        print(f"peak: bf16 {bf16_peak / 1e9:.0f} GFLOP/s, float32 {f32_peak / 1e9:.0f} GFLOP/s")
        encode_before, encode_after = encoders()
        variants = {
            "encoder before (bf16 autocast)": (encode_before, 64),
            "encoder after (bf16 weights)": (encode_after, 64),
            "training step before (AdamW foreach)": (trainer(False), 128),
            "training step after (fused AdamW)": (trainer(True), 128),
        }
        runs = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (fn, batch) in variants.items():
                runs[name].append(rate(fn, pixels, batch))
        for name, (fn, batch) in variants.items():
            flops = flops_per_image(fn, pixels[:batch])
            median = statistics.median(runs[name])
            each = ", ".join(f"{r:.0f}" for r in runs[name])
            print(
                f"{name}: {median:.0f} images/s (runs {each}), {flops / 1e9:.3f} GFLOP/image, "
                f"{flops * median / bf16_peak:.1%} of the bf16 peak"
            )


if __name__ == "__main__":
    main()
