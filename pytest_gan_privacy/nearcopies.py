"""Near-copies: generated images that are a real image shifted, turned or re-exposed.

A copy that moved a few pixels is still a copy, so similarity here is the best match
over small shifts and rotations, in the local-structure space (each 8x8 window
centred and normalised: the structure term of SSIM, one matrix multiply). The
transforms are applied to the candidates (few) rather than the generated images
(many), and everything runs in blocks, so memory does not grow with
generated x candidates.

The threshold, labels-blind (`near_copy_threshold`): max(reference, copy level).
- The reference is how alike unrelated real images get: the largest similarity of a
  candidate to its SECOND most similar other candidate (and, when patients are known,
  to candidates of other patients only). The most similar real pairs are slices of one
  patient (on brainmri64 every real pair above 0.8 is two neighbouring slices), so the
  largest similarity of all, the rule before, was set by one near-twin pair: with 20
  twins among the candidates it rose to 0.97 and the detector missed 95 % of planted
  copies. Skipping each image's nearest other candidate skips its twin.
- The copy level is what a copy looks like to the detector on these images: the 5th
  percentile of the similarity of a standard copy of every candidate to its original.
  A real image of another patient (a perfect generator) reaches the reference's
  maximum by chance as soon as there are more generated images than candidates, which
  gave false near-copies in up to 27 % of clean draws; at the copy level, none in 307.
A candidate has a near-copy when some generated image is above the threshold against
it (not only its best match: a copy of a member with a twin among the candidates still
flags the member). Measurements: README, "Near-copies and the power check".

The power check plants copies of members (canaries) at three difficulty levels and
counts how many the same detector and threshold find: a PASS means something only when
it finds the standard ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .encoders import FixedEncoder
from .similarity import Rows, as_rows, merge_top_k
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


def _bank(candidates: torch.Tensor, device) -> torch.Tensor:
    """(D, T x cb) local-structure features of every transform of a few candidates."""
    bank = transformed_crops(candidates)  # (T, cb, D)
    return bank.permute(2, 0, 1).reshape(bank.shape[2], -1).to(device)


def _best_over_transforms(features: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(B, cb): each query's similarity to each candidate, maximised over its transforms."""
    return (features @ bank).view(len(features), N_TRANSFORMS, -1).amax(dim=1)


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
        bank = _bank(candidates[c0 : c0 + CANDIDATE_BLOCK], device)
        for q0 in range(0, len(queries), block):
            features = queries[q0 : q0 + block].to(device)
            yield q0, c0, _best_over_transforms(features, bank)
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


# Generated rows held at once by the scan, in blocks of `block` (8,192 x 3,136 floats,
# 100 MB): the candidates' transforms are recomputed once per chunk, a few percent of
# the scan, so that the generated side streams through once (from the cache packs or
# the encoder) whatever its size.
CHUNK_BLOCKS = 16


@torch.inference_mode()
def robust_scan(
    generated: torch.Tensor | Rows,
    candidates: torch.Tensor,
    device: torch.device | str = "cpu",
    block: int = 512,
    k: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> RobustScan:
    """Shift- and rotation-robust similarity of every generated image to every candidate.

    `generated` holds `generated_side` features (G, D), in memory or streamed
    (similarity.Rows, read once); `candidates` the images (C, 1, H, W).
    sim(g, c) = max over transforms t of <f(crop(g)), f(t(c))>. Every candidate's
    matches are merged in generated order and every generated image's in candidate
    order, so the result does not depend on the chunking.
    `progress(generated done, generated)` as the scan advances.
    """
    device = torch.device(device)
    generated = as_rows(generated)
    total = len(generated)
    k = min(k, total)
    top = torch.full((len(candidates), k), -math.inf, device=device)
    top_index = torch.zeros((len(candidates), k), dtype=torch.long, device=device)
    best_parts, match_parts = [], []
    g_start = 0
    if progress is not None:
        progress(0, total)
    for chunk in generated.blocks(block * CHUNK_BLOCKS):
        best = torch.full((len(chunk),), -math.inf, device=device)
        match = torch.zeros(len(chunk), dtype=torch.long, device=device)
        for c0 in range(0, len(candidates), CANDIDATE_BLOCK):
            bank = _bank(candidates[c0 : c0 + CANDIDATE_BLOCK], device)
            cols = slice(c0, c0 + bank.shape[1] // N_TRANSFORMS)
            for q0 in range(0, len(chunk), block):
                sims = _best_over_transforms(chunk[q0 : q0 + block].to(device), bank)
                g0, rows = g_start + q0, slice(q0, q0 + len(sims))
                v, i = sims.T.topk(min(k, len(sims)), dim=1)
                merged = merge_top_k(top[cols], top_index[cols], v, i + g0, k)
                top[cols], top_index[cols] = merged
                value, index = sims.max(dim=1)
                better = value > best[rows]  # ties: the first candidate keeps it
                best[rows] = torch.where(better, value, best[rows])
                match[rows] = torch.where(better, index + c0, match[rows])
        best_parts.append(best.cpu())
        match_parts.append(match.cpu())
        g_start += len(chunk)
        if progress is not None:
            progress(g_start, total)
    k = min(k, g_start)  # fewer rows than announced (images skipped as unreadable)
    empty = torch.zeros(0)
    return RobustScan(
        top[:, :k].cpu(),
        top_index[:, :k].cpu(),
        torch.cat(best_parts) if best_parts else empty,
        torch.cat(match_parts) if match_parts else empty.long(),
    )


TWIN_RANK = 2  # the reference skips each real image's most similar other candidate
COPY_QUANTILE = 0.05  # the copy level: 95 % of standard copies of candidates score above it
COPY_SIMILARITIES = 400  # at least this many copies set the copy level (several per candidate)


@torch.inference_mode()
def real_pair_reference(
    candidates: torch.Tensor,
    device: torch.device | str = "cpu",
    groups: Sequence[object] | None = None,
    rank: int = TWIN_RANK,
) -> tuple[float, tuple[int, int] | None]:
    """The largest `rank`-th best robust similarity of a candidate to the other
    candidates (to those of other patients, when `groups` says whose each is), and
    which two candidates they are."""
    device = torch.device(device)
    n = len(candidates)
    top = torch.full((n, rank), -math.inf, device=device)
    ids = torch.zeros((n, rank), dtype=torch.long, device=device)
    group_of = None
    if groups is not None and any(g is not None for g in groups):
        codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        group_of = torch.tensor([codes[g] for g in groups], device=device)
    for q0, c0, sims in _robust_similarities(generated_side(candidates), candidates, device, 256):
        rows = torch.arange(q0, q0 + len(sims), device=device)[:, None]
        cols = torch.arange(c0, c0 + sims.shape[1], device=device)[None, :]
        same = rows == cols
        if group_of is not None:
            same = same | (group_of[rows] == group_of[cols])
        sims = sims.masked_fill(same, -math.inf)
        k = min(rank, sims.shape[1])
        v, i = sims.topk(k, dim=1)
        top[q0 : q0 + len(sims)], ids[q0 : q0 + len(sims)] = merge_top_k(
            top[q0 : q0 + len(sims)], ids[q0 : q0 + len(sims)], v, i + c0, rank
        )
    kth = top[:, rank - 1]
    if not torch.isfinite(kth).any():
        return -math.inf, None
    query = int(kth.argmax())
    return float(kth[query]), (query, int(ids[query, rank - 1]))


@torch.inference_mode()
def own_similarity(
    copies: torch.Tensor, originals: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N,) the detector's similarity of each copy to its own original (both (N, 1, H, W))."""
    device = torch.device(device)
    out = []
    for i in range(0, len(copies), CANDIDATE_BLOCK):
        bank = transformed_crops(originals[i : i + CANDIDATE_BLOCK]).to(device)  # (T, b, D)
        query = generated_side(copies[i : i + CANDIDATE_BLOCK]).to(device)  # (b, D)
        out.append(torch.einsum("bd,tbd->tb", query, bank).amax(dim=0).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def copy_level(candidates: torch.Tensor, seed: int, device: torch.device | str = "cpu") -> float:
    """The COPY_QUANTILE quantile of the similarity of standard copies of every candidate
    (all of them: no label is used) to their originals; with few candidates, several
    copies each, so that the quantile is not noise."""
    per = min(8, max(1, math.ceil(COPY_SIMILARITIES / max(1, len(candidates)))))
    originals = candidates.repeat(per, 1, 1, 1)
    sims = own_similarity(augmented_copies(originals, seed), originals, device)
    return float(torch.quantile(sims.double(), COPY_QUANTILE))


@dataclass(frozen=True)
class NearCopyThreshold:
    """A generated image is a near-copy of a candidate when their similarity is over
    `value` = max(`reference`, `copy_level`); `limited_by` says which decided: "copy
    level" (the normal case: copies stand out from unrelated real pairs), or "real pairs"
    (real images here are as alike as copies: fewer copies are found, and the power
    check says so, rather than the gate raising false alarms)."""

    value: float
    reference: float
    copy_level: float
    pair: tuple[int, int] | None = None  # the two candidates that set the reference

    @property
    def limited_by(self) -> str:
        return "copy level" if self.copy_level >= self.reference else "real pairs"


def near_copy_threshold(
    candidates: torch.Tensor,
    seed: int,
    device: torch.device | str = "cpu",
    groups: Sequence[object] | None = None,
) -> NearCopyThreshold:
    """The labels-blind near-copy threshold of these candidates (see the module's doc)."""
    reference, pair = real_pair_reference(candidates, device, groups)
    level = copy_level(candidates, seed, device)
    return NearCopyThreshold(max(reference, level), reference, level, pair)


@dataclass
class NearCopies:
    """Generated images that are near-copies of real candidates, and the candidates
    they copy."""

    threshold: NearCopyThreshold
    # the generated images over the threshold with their best-matching candidate, most
    # similar first
    generated_index: list[int] = field(default_factory=list)
    candidate_index: list[int] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    # every candidate some generated image is over the threshold against
    copied: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.generated_index)


def find_near_copies(scan: RobustScan, threshold: NearCopyThreshold) -> NearCopies:
    """Every generated image over the threshold (most similar first) and every
    candidate with a near-copy."""
    t = threshold.value
    above = torch.nonzero(scan.generated_best > t).flatten().tolist()
    above.sort(key=lambda g: (-float(scan.generated_best[g]), g))
    return NearCopies(
        threshold=threshold,
        generated_index=above,
        candidate_index=[int(scan.generated_match[g]) for g in above],
        similarity=[float(scan.generated_best[g]) for g in above],
        copied=torch.nonzero(scan.candidate_best > t).flatten().tolist(),
    )


# --- the power check ------------------------------------------------------------


@dataclass(frozen=True)
class CopyRecipe:
    """How a memorising generator's copy differs from its training image: moved by up
    to `shift` px, turned by up to `angle` degrees, re-exposed (contrast and brightness)
    by up to `exposure`, blurred (Gaussian, `blur` px) and given noise (`noise`, on the
    [0, 1] scale); every draw uniform, per image."""

    shift: float = 3.0
    angle: float = 4.0
    exposure: float = 0.05
    noise: float = 2 / 255
    blur: float = 0.0


# The power check's levels. "standard" is the `copies` scenario's recipe and decides
# whether a PASS is conclusive; the detector finds "exact" always, "hard" (copies the
# generator re-rendered) about half the time on brain MRI: it is shown for information.
CANARY_LEVELS = {
    "exact": CopyRecipe(shift=0, angle=0, exposure=0, noise=0),
    "standard": CopyRecipe(),
    "hard": CopyRecipe(shift=4, angle=6, exposure=0.10, noise=4 / 255, blur=0.5),
}
DECIDING_LEVEL = "standard"


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) images, edges repeated."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.dtype)
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))


def augmented_copies(
    images: torch.Tensor, seed: int, recipe: CopyRecipe = CopyRecipe()
) -> torch.Tensor:
    """What a memorising generator emits: each (N, 1, H, W) image in [0, 1] changed as
    `recipe` says (by default the `copies` scenario's recipe)."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape

    def uniform(*shape):
        return torch.rand(*shape, generator=g) * 2 - 1

    angle = uniform(n) * math.radians(recipe.angle)
    shift_x, shift_y = uniform(n) * recipe.shift * 2 / w, uniform(n) * recipe.shift * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    moved = images
    if recipe.shift or recipe.angle:  # resampling in place would blur an exact copy
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        moved = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    contrast, brightness = uniform(n, 1, 1, 1), uniform(n, 1, 1, 1)
    if recipe.exposure:
        mean = moved.mean(dim=(1, 2, 3), keepdim=True)
        moved = (moved - mean) * (1 + recipe.exposure * contrast) + mean * (
            1 + recipe.exposure * brightness
        )
    moved = gaussian_blur(moved, recipe.blur)
    return (moved + torch.randn(moved.shape, generator=g) * recipe.noise).clamp(0, 1)


def pick_canaries(
    member_hashes: list[str], count: int, seed: int, groups: Sequence[object] | None = None
) -> list[int]:
    """Which members to copy: chosen by hashed content, so names and order do not
    matter; a content that occurs twice is picked once. With `groups` (the patient of
    each member), one image of every patient before a second of any: copies of one
    patient's neighbouring slices would test the detector on one anatomy only."""
    first = {h: i for i, h in reversed(list(enumerate(member_hashes)))}
    keys = {h: hashlib.sha256(f"canary:{seed}:{h}".encode()).hexdigest() for h in first}
    ordered = sorted(first, key=keys.__getitem__)
    if groups is not None:
        taken: dict[object, int] = {}
        rank = {}
        for h in ordered:
            g = groups[first[h]]
            rank[h] = taken.get(g, 0)
            taken[g] = rank[h] + 1
        ordered = sorted(ordered, key=lambda h: (rank[h], keys[h]))
    return [first[h] for h in ordered[:count]]


@dataclass
class LevelPower:
    """How many planted copies of one level the detector found."""

    planted: int
    found: int

    @property
    def fraction(self) -> float:
        return self.found / self.planted if self.planted else 0.0


@dataclass
class PowerCheck:
    """The planted copies found at each level (CANARY_LEVELS); the deciding level's
    numbers are `planted`, `found` and `fraction`."""

    levels: dict[str, LevelPower]
    members: list[int]  # candidate indices of the copied members

    @property
    def planted(self) -> int:
        return self.levels[DECIDING_LEVEL].planted

    @property
    def found(self) -> int:
        return self.levels[DECIDING_LEVEL].found

    @property
    def fraction(self) -> float:
        return self.levels[DECIDING_LEVEL].fraction


def power_check(
    candidates: torch.Tensor,
    member_indices: list[int],
    threshold: NearCopyThreshold,
    seed: int,
    device: torch.device | str = "cpu",
) -> PowerCheck:
    """Plant one copy of each given member at every level and ask the detector: a canary
    is found when it is over the threshold against its own member (as the gate flags a
    member, whichever candidate the canary matches best)."""
    members = candidates[member_indices]
    levels = {}
    for i, (name, recipe) in enumerate(CANARY_LEVELS.items()):
        canaries = augmented_copies(members, seed + i, recipe)
        sims = own_similarity(canaries, members, device)
        levels[name] = LevelPower(len(member_indices), int((sims > threshold.value).sum()))
    return PowerCheck(levels, list(member_indices))
