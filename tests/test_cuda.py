"""The GPU path: run by benchmarks/gpu_check.sh on a lent GPU; skipped without CUDA."""

import pytest
import torch
from helpers import TINY_MAE, settings_for

from pytest_gan_privacy.mae import build_model
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.runtime import autocast, use_bf16

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_a_pixel_audit_on_the_gpu_gives_the_cpu_verdict_and_numbers(leaky_release):
    on_cpu = run_audit(settings_for(leaky_release, features="pixels", device="cpu"))
    on_gpu = run_audit(settings_for(leaky_release, features="pixels", device="cuda"))
    assert on_gpu.device.startswith("cuda") and on_gpu.verdict == on_cpu.verdict
    assert len(on_gpu.near_copies) == len(on_cpu.near_copies)  # the scan on the GPU
    for name, attack in on_cpu.attacks.items():  # float sums in another order: close
        assert on_gpu.attacks[name].metrics.auc == pytest.approx(attack.metrics.auc, abs=0.01)


def test_the_default_audit_trains_the_mae_on_the_gpu_and_finds_the_leak(leaky_release):
    result = run_audit(settings_for(leaky_release, device="cuda"))
    assert result.device.startswith("cuda") and not result.passed
    assert result.encoder["mae"]["precision"] == ("bf16" if use_bf16("cuda") else "float32")


def test_a_bf16_training_step_on_the_gpu_lowers_the_loss():
    device = torch.device("cuda")
    model = build_model(TINY_MAE, seed=0).to(device)
    model.use_fused_attention(True)
    generator = torch.Generator(device).manual_seed(0)
    pixels = torch.rand(16, 1, 32, 32, device=device, generator=generator)
    noise = torch.rand(16, TINY_MAE.num_patches, device=device, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        with autocast(device, use_bf16(device)):
            loss = model.loss(pixels, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
