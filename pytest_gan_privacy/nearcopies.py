"""Near-copies: generated images that are a real image shifted, turned or re-exposed.

A copy that moved a few pixels is still a copy, so similarity here is the best match
over small shifts and rotations, in the local-structure space (each 8x8 window
centred and normalised: the structure term of SSIM, one matrix multiply). The
transforms are applied to the candidates (few) rather than the generated images
(many), and everything runs in blocks, so memory does not grow with
generated x candidates.

The threshold, labels-blind (`near_copy_threshold`): max(reference, copy level).
- The reference is how alike unrelated real images get: the largest similarity of a
  candidate to its THIRD most similar other candidate (and, when patients are known,
  to candidates of other patients only). The most similar real pairs are slices of one
  patient (on brainmri64 every real pair above 0.8 is two neighbouring slices), so the
  largest similarity of all is set by one near-twin pair: with 20 twins among the
  candidates it reaches 0.97 and the detector misses 95 % of planted copies. Skipping
  each image's two nearest other candidates skips its twins, the slices on both sides
  of it; skipping one is not enough where a slice appears three times
  (benchmarks/scale.py's ImageCLEF set: reference 0.986 at the second, 0.885 at the
  third, below the copy level 0.886, where the second leaves the power check 0 of 100).
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

from . import __version__
from .cache import cache_key
from .encoders import FixedEncoder
from .replicas import ReplicaTest
from .runtime import device_identity, use_bf16
from .settings import Choice
from .similarity import Rows, as_rows, merge_top_k
from .structure import LOCAL_STRUCTURE_C, WINDOW, crop, local_structure, structure_of_tiles

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


SHIFTS = range(-MAX_SHIFT, MAX_SHIFT + 1)  # the scan's shifts, in y and in x


def transformed_crops(images: torch.Tensor, shifts: range = SHIFTS) -> torch.Tensor:
    """Local-structure features of every shifted and rotated crop: (T, N, D), transform
    t = (angle, dy, dx) in that order, dy and dx in `shifts` (by default all the scan's;
    the near-copy index uses a coarser range); each is local_structure(crop(rotate(images,
    angle), MAX_SHIFT, dy, dx)). The tiles of all of an angle's shifts are gathered in one
    copy (a strided view of the turned images) and normalised in one call: small calls
    are slow (threads wake for each), and this is the scan's bank, built per candidate
    block."""
    n, _, h, w = images.shape
    side, tiles = len(shifts), ((h - 2 * MAX_SHIFT) // WINDOW, (w - 2 * MAX_SHIFT) // WINDOW)
    first, step = MAX_SHIFT + shifts.start, shifts.step
    per_angle = side * side * n
    out = torch.empty((len(ANGLES) * per_angle, WINDOW * WINDOW * tiles[0] * tiles[1]))
    for a, degrees in enumerate(ANGLES):
        turned = rotate(images, degrees).float().contiguous()
        sn, _, sy, sx = turned.stride()
        # (dy, dx, image, row in tile, column in tile, tile row, tile column)
        shape = (side, side, n, WINDOW, WINDOW, tiles[0], tiles[1])
        strides = (step * sy, step * sx, sn, sy, sx, WINDOW * sy, WINDOW * sx)
        grid = turned.as_strided(shape, strides, turned.storage_offset() + first * (sy + sx))
        flat = grid.reshape(per_angle, WINDOW * WINDOW, tiles[0] * tiles[1])
        structure_of_tiles(flat, out=out[a * per_angle : (a + 1) * per_angle])
    return out.view(len(ANGLES) * side * side, n, -1)


N_TRANSFORMS = len(ANGLES) * (2 * MAX_SHIFT + 1) ** 2


def _bank(candidates: torch.Tensor, device) -> torch.Tensor:
    """(T x cb, D) local-structure features of every transform of a few candidates,
    transform-major (a view of transformed_crops: no copy)."""
    bank = transformed_crops(candidates)  # (T, cb, D)
    return bank.reshape(-1, bank.shape[2]).to(device)


def _best_over_transforms(features: torch.Tensor, bank: torch.Tensor, block: int = 512):
    """(B, cb): each query's similarity to each candidate, maximised over its transforms,
    `block` queries at a time (a block's similarities to every transform are held)."""
    parts = [
        (features[q : q + block] @ bank.T).view(-1, N_TRANSFORMS, bank.shape[0] // N_TRANSFORMS)
        for q in range(0, len(features), block)
    ]
    return torch.cat([part.amax(dim=1) for part in parts])


# --- the bf16 screen ---------------------------------------------------------------
# Where the CPU multiplies bf16 natively (AMX, AVX512-BF16: 7x its float32 rate), every
# similarity is first computed in bf16, and only the pairs that can decide a result
# (a candidate's best matches, a generated image's best match, the reference's pair)
# are computed again exactly (float64, rounded to float32): the results are the float32
# scan's (within an ulp), in half its time (benchmarks/nearcopy_scan.py). Not on CUDA:
# a GPU may sum bf16 products in bf16 (cuBLAS's reduced-precision reductions), which the
# bound below does not cover, and its float32 scan is fast.
BF16_ROUNDOFF = 2.0**-8


def screen_margin(dim: int) -> float:
    """A bound on |bf16 - float32| similarity of two unit vectors of `dim` numbers: both
    inputs rounded to bf16 (2u + u^2, times sum |a_i b_i| <= 1 by Cauchy-Schwarz), the
    float32 sums (dim x 2^-24) and the product rounded to bf16 (u, |similarity| <= 1.01).
    With a max over transforms on both sides the bound holds for the max too."""
    u = BF16_ROUNDOFF
    return 2 * u + u * u + 1.01 * u + dim * 2.0**-24


def screens(device: torch.device) -> bool:
    return device.type == "cpu" and use_bf16(device)


def _screen_bank(candidates: torch.Tensor, device) -> torch.Tensor:
    """(cb x T, D) bf16 bank, candidate-major, so that the max over transforms reads
    each candidate's T similarities in a row (2.5x faster than across them in bf16)."""
    bank = transformed_crops(candidates)  # (T, cb, D)
    out = torch.empty((bank.shape[1], bank.shape[0], bank.shape[2]), dtype=torch.bfloat16)
    out.copy_(bank.transpose(0, 1))
    return out.view(-1, bank.shape[2]).to(device)


def _screened_best(features: torch.Tensor, bank: torch.Tensor, block: int = 4096):
    """(B, cb) float32 values of the bf16 best-over-transforms similarities."""
    out = torch.empty((len(features), bank.shape[0] // N_TRANSFORMS), device=features.device)
    for i in range(0, len(features), block):
        sims = features[i : i + block] @ bank.T  # (b, cb x T) bf16
        out[i : i + block] = sims.view(len(sims), -1, N_TRANSFORMS).amax(dim=2)
    return out


def _exact_pairs(features: torch.Tensor, need: torch.Tensor, candidates, device):
    """(B, cb) similarities of the `need`ed pairs of rows and candidates (-inf elsewhere),
    in float64 and rounded to float32: the correctly rounded value, whatever the rows
    around it (a float32 matrix multiply's last bit depends on its shape and threads,
    and the pairs needed differ between runs that must agree, e.g. under torchrun)."""
    sims = torch.full(need.shape, -math.inf, device=device)
    bank = transformed_crops(candidates).to(device)  # (T, cb, D)
    for j in need.any(dim=0).nonzero().flatten().tolist():
        rows = need[:, j].nonzero().flatten()
        transforms = bank[:, j].double()  # (T, D)
        sims[rows, j] = (features[rows].double() @ transforms.T).amax(dim=1).float()
    return sims


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

    def tensors(self) -> dict[str, torch.Tensor]:
        """As a cache entry (cache.TensorCache); RobustScan(**tensors) reads it back."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


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
# 100 MB): the candidates' transforms are recomputed once per chunk (twice with the
# screen), so that the generated side streams through once (from the cache packs or
# the encoder) whatever its size. With the screen, a chunk's bf16 similarities to every
# candidate are held too: at most SCREEN_FLOATS of them.
CHUNK_BLOCKS = 16
SCREEN_FLOATS = 1 << 25


@torch.inference_mode()
def robust_scan(
    generated: torch.Tensor | Rows,
    candidates: torch.Tensor,
    device: torch.device | str = "cpu",
    block: int = 512,
    k: int = 3,
    progress: Callable[[int, int], None] | None = None,
    screen: bool | None = None,
) -> RobustScan:
    """Shift- and rotation-robust similarity of every generated image to every candidate.

    `generated` holds `generated_side` features (G, D), in memory or streamed
    (similarity.Rows, read once); `candidates` the images (C, 1, H, W).
    sim(g, c) = max over transforms t of <f(crop(g)), f(t(c))>. Every candidate's
    matches are merged in generated order and every generated image's in candidate
    order, so the result does not depend on the chunking. `screen` (default: where bf16
    is native on a CPU) computes exactly only the pairs that can be in a result.
    `progress(generated done, generated)` as the scan advances.
    """
    device = torch.device(device)
    screen = screens(device) if screen is None else screen
    generated = as_rows(generated)
    total, n = len(generated), len(candidates)
    k = min(k, total)
    top = torch.full((n, k), -math.inf, device=device)
    top_index = torch.zeros((n, k), dtype=torch.long, device=device)
    best_parts, match_parts = [], []
    g_start = 0
    rows = block * CHUNK_BLOCKS
    if screen:
        rows = max(block, min(rows, SCREEN_FLOATS // max(1, n)))
    if progress is not None:
        progress(0, total)
    for chunk in generated.blocks(rows):
        chunk = chunk.to(device)
        needed = _needed_pairs(chunk, candidates, top, device) if screen else None
        best, match = _scan_chunk(chunk, candidates, needed, top, top_index, g_start, block)
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


def _scan_chunk(
    chunk: torch.Tensor,
    candidates: torch.Tensor,
    needed: torch.Tensor | None,
    top: torch.Tensor,
    top_index: torch.Tensor,
    g_start: int,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of generated rows against every candidate, a block of candidates at a
    time: each candidate's top-k (merged into `top`, `top_index` in place) and each
    generated row's best candidate (value, index). `needed`: the pairs the screen kept
    (None: every pair, in float32)."""
    device, n, k = chunk.device, len(candidates), top.shape[1]
    best = torch.full((len(chunk),), -math.inf, device=device)
    match = torch.zeros(len(chunk), dtype=torch.long, device=device)
    for c0 in range(0, n, CANDIDATE_BLOCK):
        cols = slice(c0, min(n, c0 + CANDIDATE_BLOCK))
        if needed is None:
            sims = _best_over_transforms(chunk, _bank(candidates[cols], device), block)
        elif needed[:, cols].any():
            sims = _exact_pairs(chunk, needed[:, cols], candidates[cols], device)
        else:
            continue
        v, i = sims.T.topk(min(k, len(sims)), dim=1)
        top[cols], top_index[cols] = merge_top_k(top[cols], top_index[cols], v, i + g_start, k)
        value, index = sims.max(dim=1)
        better = value > best  # ties: the first candidate keeps it
        best = torch.where(better, value, best)
        match = torch.where(better, index + c0, match)
    return best, match


def _needed_pairs(chunk, candidates, top, device) -> torch.Tensor:
    """(B, C) which pairs of the chunk's rows and the candidates can be in the scan's
    result, from their bf16 similarities: within twice the margin of a row's best, or
    of what a candidate's k-th best match is known to be at least. Every other pair's
    float32 similarity is below both, so leaving it out changes nothing."""
    margin = screen_margin(chunk.shape[1])
    features = chunk.to(torch.bfloat16)
    approx = torch.empty((len(chunk), len(candidates)), device=device)
    for c0 in range(0, len(candidates), CANDIDATE_BLOCK):
        cols = slice(c0, c0 + CANDIDATE_BLOCK)
        approx[:, cols] = _screened_best(features, _screen_bank(candidates[cols], device))
    row_floor = approx.amax(dim=1, keepdim=True) - 2 * margin
    k = top.shape[1]
    known = top[:, k - 1]  # the k-th best so far, exact
    if len(chunk) >= k:  # k of this chunk's rows are at least their bf16 value - margin
        known = torch.maximum(known, approx.topk(k, dim=0).values[k - 1] - margin)
    return (approx >= row_floor) | (approx >= (known - margin)[None, :])


def detector_identity(device: torch.device) -> dict:
    """What decides the detector's numbers, beside the images: for cache keys of its
    scan and threshold (with the versions and the device's identity)."""
    return {
        "max_shift": MAX_SHIFT,
        "angles": ANGLES,
        "window": WINDOW,
        "structure_c": LOCAL_STRUCTURE_C,
        "twin_rank": TWIN_RANK,
        "copy_quantile": COPY_QUANTILE,
        "copy_similarities": COPY_SIMILARITIES,
        "copy_recipe": repr(CopyRecipe()),
        "bf16_screen": screens(torch.device(device)),
    }


def detector_key(
    device: torch.device, hash_lists: list[list[str]], orientation: int, *more: object
) -> str:
    """The cache key of a near-copy scan or threshold: the images' hashes in order, how
    the candidates are turned, the detector's settings, the device and the versions."""
    digests = [hashlib.sha256("\n".join(h).encode()).hexdigest() for h in hash_lists]
    return cache_key(
        "near-copy",
        detector_identity(device),
        *device_identity(device),
        __version__,
        torch.__version__,
        digests,
        orientation,
        *more,
    )


TWIN_RANK = 3  # the reference skips each real image's two most similar other candidates
COPY_QUANTILE = 0.05  # the copy level: 95 % of standard copies of candidates score above it
COPY_SIMILARITIES = 400  # at least this many copies set the copy level (several per candidate)


@torch.inference_mode()
def real_pair_reference(
    candidates: torch.Tensor,
    device: torch.device | str = "cpu",
    groups: Sequence[object] | None = None,
    rank: int = TWIN_RANK,
    screen: bool | None = None,
) -> tuple[float, tuple[int, int] | None]:
    """The largest `rank`-th best robust similarity of a candidate to the other
    candidates (to those of other patients, when `groups` says whose each is), and
    which two candidates they are. With the screen (see robust_scan), every candidate's
    `rank`-th best is found in bf16 and only the candidates within twice the margin of
    the largest are measured again, exactly (float64, rounded to float32)."""
    device = torch.device(device)
    screen = screens(device) if screen is None else screen
    group_of = None
    if groups is not None and any(g is not None for g in groups):
        codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        group_of = torch.tensor([codes[g] for g in groups], device=device)
    queries = generated_side(candidates).to(device)
    everyone = torch.arange(len(candidates), device=device)
    precision = "float32"
    if screen:
        approx, _ = _kth_other(queries, everyone, candidates, group_of, rank, device, "bf16")
        if not torch.isfinite(approx).any():
            return -math.inf, None
        margin = screen_margin(queries.shape[1])
        everyone = torch.nonzero(approx >= approx.max() - 2 * margin).flatten()
        precision = "float64"
    kth, ids = _kth_other(queries, everyone, candidates, group_of, rank, device, precision)
    if not torch.isfinite(kth).any():
        return -math.inf, None
    best = int(kth.argmax())  # the first of equals, as over all candidates
    return float(kth[best]), (int(everyone[best]), int(ids[best]))


def _kth_other(queries, which, candidates, group_of, rank, device, precision):
    """For the candidates `which`: the `rank`-th best similarity to another candidate
    (of another patient), and which candidate it is; in "bf16" (the screen), "float32"
    or "float64" (rounded to float32: the screened reference's exact pass, see
    _exact_pairs)."""
    top = torch.full((len(which), rank), -math.inf, device=device)
    ids = torch.zeros((len(which), rank), dtype=torch.long, device=device)
    dtype = {"bf16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
    features = queries[which].to(dtype[precision])
    for c0 in range(0, len(candidates), CANDIDATE_BLOCK):
        part = candidates[c0 : c0 + CANDIDATE_BLOCK]
        if precision == "bf16":
            sims = _screened_best(features, _screen_bank(part, device))
        else:
            sims = _best_over_transforms(features, _bank(part, device).to(features.dtype)).float()
        cols = torch.arange(c0, c0 + len(part), device=device)[None, :]
        same = which[:, None] == cols
        if group_of is not None:
            same = same | (group_of[which][:, None] == group_of[cols])
        sims = sims.masked_fill(same, -math.inf)
        v, i = sims.topk(min(rank, sims.shape[1]), dim=1)
        top, ids = merge_top_k(top, ids, v, i + c0, rank)
    return top[:, rank - 1], ids[:, rank - 1]


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


class LimitedBy(Choice):
    """What set the near-copy threshold."""

    COPY_LEVEL = "copy level"  # the normal case: copies stand out from unrelated real pairs
    REAL_PAIRS = "real pairs"  # real images here are as alike as copies
    # members closer to generated images than any non-member, beyond chance (replicas.py)
    NON_MEMBERS = "non-members"


@dataclass(frozen=True)
class NearCopyThreshold:
    """A generated image is a near-copy of a candidate when their similarity is over
    `applied`: the labels-blind `value` = max(`reference`, `copy_level`), or, when the
    members hold replicas (`replicas`, replicas.py), the non-members' best match where
    that is lower. `limited_by` says which decided (with real pairs, fewer copies are
    found, and the power check says so, rather than the gate raising false alarms).
    The power check plants its copies against `value`: what a release without
    replicas is held to."""

    value: float
    reference: float
    copy_level: float
    pair: tuple[int, int] | None = None  # the two candidates that set the reference
    replicas: ReplicaTest | None = None  # with labels only: not part of the cache entry

    @property
    def applied(self) -> float:
        if self.replicas is not None and self.replicas.significant:
            return min(self.value, self.replicas.level)
        return self.value

    @property
    def limited_by(self) -> LimitedBy:
        if self.applied < self.value:
            return LimitedBy.NON_MEMBERS
        if self.copy_level >= self.reference:
            return LimitedBy.COPY_LEVEL
        return LimitedBy.REAL_PAIRS

    def tensors(self) -> dict[str, torch.Tensor]:
        """As a cache entry (float64: the floats come back exactly); `from_tensors`."""
        pair = (-1, -1) if self.pair is None else self.pair
        values = [self.value, self.reference, self.copy_level]
        return {"values": torch.tensor(values, dtype=torch.float64), "pair": torch.tensor(pair)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> NearCopyThreshold:
        value, reference, level = tensors["values"].tolist()
        first, second = tensors["pair"].tolist()
        return cls(value, reference, level, None if first < 0 else (first, second))


def near_copy_threshold(
    candidates: torch.Tensor,
    seed: int,
    device: torch.device | str = "cpu",
    groups: Sequence[object] | None = None,
    reference: Callable[..., tuple[float, tuple[int, int] | None]] | None = None,
) -> NearCopyThreshold:
    """The labels-blind near-copy threshold of these candidates (see the module's doc).
    `reference(candidates, groups)`: how the real-pair reference is found (default:
    real_pair_reference, every pair; shortlist.indexed_reference through the index)."""
    if reference is None:
        reference_value, pair = real_pair_reference(candidates, device, groups)
    else:
        reference_value, pair = reference(candidates, groups)
    level = copy_level(candidates, seed, device)
    return NearCopyThreshold(max(reference_value, level), reference_value, level, pair)


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
    """Every generated image over the threshold (`applied`; most similar first) and
    every candidate with a near-copy."""
    t = threshold.applied
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
