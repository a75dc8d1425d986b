"""Near-copies: generated images that are a real image shifted, turned or re-exposed.

A copy that moved a few pixels is still a copy, so similarity here is the best match
over small shifts and rotations, in the local-structure space (each 8x8 window
centred and normalised: the structure term of SSIM, one matrix multiply). The
transforms are applied to the candidates (few) rather than the generated images
(many), and everything runs in blocks, so memory does not grow with
generated x candidates.

A generated image is a near-copy of a candidate when their similarity exceeds the
largest similarity between two distinct real candidates: it is closer to that real
image than any real image is to another. The threshold needs no labels.

The power check plants augmented copies of a few members (canaries) among the
generated images and counts how many the detector finds: a PASS means something only
when it finds them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .encoders import FixedEncoder
from .similarity import merge_top_k
from .structure import crop, local_structure

MAX_SHIFT = 3  # pixels at the 64 px working size (about 5 % of the image)
ANGLES = (-3.0, 0.0, 3.0)  # degrees
CANDIDATE_BLOCK = 32  # candidates whose transformed crops are held at once


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (N, 1, H, W) images about their centre (bilinear, edges repeated)."""
    if degrees == 0:
        return images
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def transformed_crops(images: torch.Tensor) -> torch.Tensor:
    """Local-structure features of every shifted and rotated crop: (T, N, D)."""
    out = []
    for degrees in ANGLES:
        turned = rotate(images, degrees)
        for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
            for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                out.append(local_structure(crop(turned, MAX_SHIFT, dy, dx)))
    return torch.stack(out)


N_TRANSFORMS = len(ANGLES) * (2 * MAX_SHIFT + 1) ** 2


def _robust_similarities(
    queries: torch.Tensor, candidates: torch.Tensor, device, block: int, progress=None
):
    """Yield (q0, c0, (B, cb) similarities): each block of `generated_side` query
    features (Q, D) against a block of candidates, maximised over the candidates'
    transforms. One block of transformed candidates (CANDIDATE_BLOCK x T x D floats,
    60 MB) is held at a time: all of them would cost 1.8 MB per candidate.
    `progress(candidates done, candidates)` after each block of candidates."""
    for c0 in range(0, len(candidates), CANDIDATE_BLOCK):
        if progress is not None:
            progress(c0, len(candidates))
        bank = transformed_crops(candidates[c0 : c0 + CANDIDATE_BLOCK])  # (T, cb, D)
        bank = bank.permute(2, 0, 1).reshape(bank.shape[2], -1).to(device)
        for q0 in range(0, len(queries), block):
            features = queries[q0 : q0 + block].to(device)
            yield q0, c0, (features @ bank).view(len(features), N_TRANSFORMS, -1).amax(dim=1)
    if progress is not None:
        progress(len(candidates), len(candidates))


@dataclass
class RobustScan:
    """What the near-copy detector needs from generated x candidates similarities."""

    candidate_top: torch.Tensor  # (C, k) each candidate's k best matches among generated
    candidate_top_index: torch.Tensor  # (C, k) which generated images they are
    generated_best: torch.Tensor  # (G,) each generated image's best match among candidates
    generated_match: torch.Tensor  # (G,) index of that candidate

    @property
    def candidate_best(self) -> torch.Tensor:
        """(C,) each candidate's best match: the near-copy attack's score."""
        return self.candidate_top[:, 0]


def generated_side(images: torch.Tensor) -> torch.Tensor:
    """The generated images' side of the comparison: local structure of the centre
    crop, (N, D). Computed once per image (an encoder: NearCopyEncoder)."""
    return local_structure(crop(images, MAX_SHIFT))


class NearCopyEncoder(FixedEncoder):
    """The generated side of the near-copy scan as an encoder, so that it is streamed
    and cached like any feature (the candidates' side needs their pixels, to move them)."""

    name = "near-copy"
    attacks = ()  # its scores come from the scan (attacks.near_copy_attack)

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return generated_side(pixels)


@torch.inference_mode()
def robust_scan(
    generated: torch.Tensor,
    candidates: torch.Tensor,
    device: torch.device | str = "cpu",
    block: int = 512,
    k: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> RobustScan:
    """Shift- and rotation-robust similarity of every generated image to every candidate.

    `generated` holds `generated_side` features (G, D); `candidates` the images
    (C, 1, H, W). sim(g, c) = max over transforms t of <f(crop(g)), f(t(c))>.
    """
    device = torch.device(device)
    k = min(k, len(generated))
    top = torch.full((len(candidates), k), -math.inf, device=device)
    top_index = torch.zeros((len(candidates), k), dtype=torch.long, device=device)
    generated_best = torch.full((len(generated),), -math.inf, device=device)
    generated_match = torch.zeros(len(generated), dtype=torch.long, device=device)
    for g0, c0, sims in _robust_similarities(generated, candidates, device, block, progress):
        rows, cols = slice(g0, g0 + len(sims)), slice(c0, c0 + sims.shape[1])
        v, i = sims.T.topk(min(k, len(sims)), dim=1)
        top[cols], top_index[cols] = merge_top_k(top[cols], top_index[cols], v, i + g0, k)
        value, index = sims.max(dim=1)
        better = value > generated_best[rows]  # ties: the first candidate keeps it
        generated_best[rows] = torch.where(better, value, generated_best[rows])
        generated_match[rows] = torch.where(better, index + c0, generated_match[rows])
    return RobustScan(top.cpu(), top_index.cpu(), generated_best.cpu(), generated_match.cpu())


@torch.inference_mode()
def closest_real_pair(
    candidates: torch.Tensor, device: torch.device | str = "cpu"
) -> tuple[float, int, int]:
    """The largest robust similarity between two distinct candidates, and which two
    they are (the near-copy threshold, and what sets it)."""
    device = torch.device(device)
    best, pair = -math.inf, (0, 0)
    for q0, c0, sims in _robust_similarities(generated_side(candidates), candidates, device, 256):
        rows = torch.arange(len(sims), device=device)
        itself = (rows + q0 >= c0) & (rows + q0 < c0 + sims.shape[1])
        sims[rows[itself], (rows + q0 - c0)[itself]] = -math.inf
        value = float(sims.max())
        if value > best:
            r, c = divmod(int(sims.argmax()), sims.shape[1])
            best, pair = value, (q0 + r, c0 + c)
    return best, pair[0], pair[1]


def real_pair_threshold(candidates: torch.Tensor, device: torch.device | str = "cpu") -> float:
    """The largest robust similarity between two distinct candidates."""
    return closest_real_pair(candidates, device)[0]


@dataclass
class NearCopies:
    """Generated images closer to a real candidate than any two real candidates are."""

    threshold: float
    generated_index: list[int] = field(default_factory=list)
    candidate_index: list[int] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.generated_index)


def find_near_copies(scan: RobustScan, threshold: float) -> NearCopies:
    """Every generated image above the threshold, most similar first."""
    above = torch.nonzero(scan.generated_best > threshold).flatten().tolist()
    above.sort(key=lambda g: (-float(scan.generated_best[g]), g))
    return NearCopies(
        threshold=threshold,
        generated_index=above,
        candidate_index=[int(scan.generated_match[g]) for g in above],
        similarity=[float(scan.generated_best[g]) for g in above],
    )


# --- the power check ------------------------------------------------------------


def augmented_copies(images: torch.Tensor, seed: int) -> torch.Tensor:
    """What a memorising generator emits: each image shifted up to 3 px, turned up to
    4 degrees, re-exposed by up to 5 % and given noise (the `copies` scenario's recipe)."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape

    def uniform(*shape):
        return torch.rand(*shape, generator=g) * 2 - 1

    angle = uniform(n) * math.radians(4.0)
    shift_x, shift_y = uniform(n) * 3 * 2 / w, uniform(n) * 3 * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    moved = (moved - mean) * (1 + 0.05 * uniform(n, 1, 1, 1)) + mean * (
        1 + 0.05 * uniform(n, 1, 1, 1)
    )
    return (moved + torch.randn(moved.shape, generator=g) * 2 / 255).clamp(0, 1)


def pick_canaries(member_hashes: list[str], count: int, seed: int) -> list[int]:
    """Which members to copy: chosen by hashed content, so names and order do not matter."""
    keys = [hashlib.sha256(f"canary:{seed}:{h}".encode()).hexdigest() for h in member_hashes]
    return sorted(range(len(keys)), key=keys.__getitem__)[:count]


@dataclass
class PowerCheck:
    """How many planted copies of members the near-copy detector found."""

    planted: int
    found: int
    members: list[int]  # candidate indices of the copied members

    @property
    def fraction(self) -> float:
        return self.found / self.planted if self.planted else 0.0


def power_check(
    candidates: torch.Tensor,
    member_indices: list[int],
    threshold: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> PowerCheck:
    """Plant one augmented copy of each given member and re-run the detector on them.

    The canaries are scored against every candidate, as generated images would be; one is
    found when its best match is its own member and above the near-copy threshold.
    """
    canaries = augmented_copies(candidates[member_indices], seed)
    scan = robust_scan(generated_side(canaries), candidates, device)
    found = sum(
        int(scan.generated_match[i]) == m and float(scan.generated_best[i]) > threshold
        for i, m in enumerate(member_indices)
    )
    return PowerCheck(planted=len(member_indices), found=found, members=list(member_indices))
