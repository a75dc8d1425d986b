"""The MAE's space made invariant to what a copy survives: measured, and not adopted.

    python benchmarks/invariant_mae.py [--scenarios copies dcgan-100 ...]
                                       [--mae-epochs 8 20] [--fine-tune-epochs 0 2]

For each scenario of ../shared/data/brainmri64 (or folders in the task layout given by
path), for each --mae-epochs: the `cpu` preset's MAE trained on the generated images as
the audit trains it (mae.train, seed 0); then, for each --fine-tune-epochs, a copy of it
whose encoder is fine-tuned labels-blind on the generated images with an
augmentation-invariance objective (0: no fine-tune): two views of each image (shift up to
4 px, turn up to 6 degrees, zoom up to 8 %, exposure +-10 %, blur on half of them, noise),
NT-Xent (temperature 0.1) between the views' descriptors (the attacks' own: layer-normed
token grids, flattened, centred, L2-normalised), plus a KoLeo term that keeps the
descriptors spread. Printed, for the audit's three attacks (nearest-neighbour,
calibrated, retrieval: attacks.similarity_attacks) on two token grids of each model, the
final tokens (the audit's `mae` features) and the patch embedding's (the encoder's first
layer): the AUC, and the seconds of training and fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from pytest_gan_privacy.attacks import similarity_attacks
from pytest_gan_privacy.encoders import CALIBRATED, NEAREST, RETRIEVAL
from pytest_gan_privacy.images import load_image_set, load_pixels
from pytest_gan_privacy.mae import PRESETS, MaePreset, MaskedAutoencoder, train
from pytest_gan_privacy.runtime import autocast, use_bf16

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("copies", "dcgan-100", "vae-100", "ddpm-100", "dcgan-1000", "disjoint")
CPU = torch.device("cpu")
ATTACKS = SimpleNamespace(name="mae", attacks=(NEAREST, CALIBRATED, RETRIEVAL), centre=True)


def views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: what a copy survives."""
    n, _, h, w = x.shape

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = uniform(n) * math.radians(6)
    scale = 1 / (1 + (uniform(n) + 1) * 0.04)
    shift = uniform(n, 2) * 4 * 2 / torch.tensor([w, h])
    cos, sin = angle.cos() * scale, angle.sin() * scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    mean = y.mean((1, 2, 3), keepdim=True)
    y = (y - mean) * (1 + 0.1 * uniform(n, 1, 1, 1)) + mean + 0.05 * uniform(n, 1, 1, 1)
    blurred = F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    y = torch.where(torch.rand(n, 1, 1, 1, generator=generator) < 0.5, blurred, y)
    noise = (
        torch.randn(y.shape, generator=generator)
        * 0.02
        * torch.rand(n, 1, 1, 1, generator=generator)
    )
    return (y + noise).clamp(0, 1)


def descriptors(tokens: torch.Tensor) -> torch.Tensor:
    flat = F.layer_norm(tokens.float(), tokens.shape[-1:]).flatten(1)
    return F.normalize(flat - flat.mean(0, keepdim=True), dim=1)


def fine_tune(model: MaskedAutoencoder, pixels: torch.Tensor, epochs: int) -> MaskedAutoencoder:
    """NT-Xent between two views + KoLeo, AdamW 2e-4 with warm-up then cosine, batch 128."""
    model = copy.deepcopy(model).train().requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    batch = min(128, len(pixels))
    steps = epochs * (len(pixels) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.05, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 2e-4, total_steps=steps, pct_start=0.1
    )
    bf16 = use_bf16(CPU)
    for step in range(steps):
        if step % (len(pixels) // batch) == 0:
            order = torch.randperm(len(pixels), generator=generator)
        i = step % (len(pixels) // batch)
        x = pixels[order[i * batch : (i + 1) * batch]]
        with autocast(CPU, bf16):
            both = torch.cat([views(x, generator), views(x, generator)])
            tokens = model._encode(model.scale(both))[:, 1:]  # patch_tokens is no_grad
        z = descriptors(tokens)
        logits = z @ z.T / 0.1
        logits.fill_diagonal_(-math.inf)
        pairs = torch.cat([torch.arange(len(x), 2 * len(x)), torch.arange(len(x))])
        first = z[: len(x)]
        with torch.no_grad():  # KoLeo: each descriptor's distance to its nearest other
            nearest = (first @ first.T).fill_diagonal_(-2).argmax(1)
        koleo = -torch.log((first - first[nearest]).norm(dim=1) + 1e-4).mean()
        loss = F.cross_entropy(logits, pairs) + koleo
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.inference_mode()
def token_grids(model: MaskedAutoencoder, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The final tokens (the audit's features) and the patch embedding's, flattened."""
    final, first = [], []
    for block in pixels.split(256):
        final.append(model.patch_tokens(block))
        first.append(model.patch_embed(model.scale(block)))
    return {
        name: F.normalize(F.layer_norm(t, t.shape[-1:]).flatten(1), dim=1)
        for name, t in (("final tokens", torch.cat(final)), ("patch embedding", torch.cat(first)))
    }


def aucs(
    model: MaskedAutoencoder, generated: torch.Tensor, candidates: torch.Tensor, labels: np.ndarray
) -> str:
    out = []
    gen, cand = token_grids(model, generated), token_grids(model, candidates)
    for grid in gen:
        scores = similarity_attacks(ATTACKS, cand[grid], gen[grid])
        out.append(" / ".join(f"{roc_auc_score(labels, s.scores):.3f}" for s in scores))
    return " | ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS)
    parser.add_argument("--mae-epochs", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--fine-tune-epochs", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    config = PRESETS[MaePreset.CPU]
    print(
        "| scenario | MAE epochs | fine-tune epochs | final tokens: NN / calibrated / retrieval"
        " | patch embedding: NN / calibrated / retrieval | MAE s | fine-tune s |\n"
        + "|---" * 7
        + "|",
        flush=True,
    )
    for scenario in args.scenarios:
        folder = Path(scenario) if "/" in scenario else DATA / scenario
        sets = [
            load_pixels(load_image_set(folder / part, role), config.img_size)
            for part, role in (
                ("generated", "generated"),
                ("real/used", "used"),
                ("real/not_used", "not_used"),
            )
        ]
        generated, members, non_members = sets
        candidates = torch.cat([members, non_members])
        labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
        for epochs in args.mae_epochs:
            start = time.perf_counter()
            mae = train(generated, replace(config, epochs=epochs), seed=0, device=CPU)
            trained = time.perf_counter() - start
            for tune in args.fine_tune_epochs:
                start = time.perf_counter()
                model = fine_tune(mae, generated, tune) if tune else mae
                tuned = time.perf_counter() - start
                numbers = aucs(model, generated, candidates, labels)
                row = [folder.name, epochs, tune, numbers, f"{trained:.1f}", f"{tuned:.1f}"]
                print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
