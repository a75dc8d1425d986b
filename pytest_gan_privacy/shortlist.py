"""Near-copies through an index: a shortlist of pairs, each checked exactly.

The exhaustive scan (nearcopies.robust_scan) compares every generated image with every
candidate under 147 shifts and turns: at 100,000 generated x 6,000 candidates, 9e10
similarities of 3,136 numbers. Nearly all of those pairs are unrelated images, far
under any threshold. The index finds the few pairs worth checking:

1. An embedding of the detector's own features, small enough to search: their
   projection on the 64 main directions of the candidates' features (a randomized
   range finder, seeded: the same candidates give the same basis), L2-normalised.
   Its invariance comes from the candidates' side: each candidate is indexed under
   27 of the scan's moves (the three turns, shifts of -2, 0, 2 px in each direction),
   so a generated copy finds the moved candidate it came from.
2. Two FAISS searches (exact inner products, IndexFlatIP): every generated image's
   GENERATED_NEIGHBOURS nearest candidate moves (a generated image's best match,
   where near-copies are listed), and every candidate move's CANDIDATE_NEIGHBOURS
   nearest generated images (a candidate's best matches, its near-copy score).
3. Each shortlisted pair checked with the exhaustive scan's own similarity (all 147
   moves, float32), so every number the detector reports is the scan's: a near-copy
   is found when its pair is on the shortlist. benchmarks/nearcopy_index.py measures
   how often that is (the shortlist's recall of the exhaustive scan's near-copies).

The generated features (3,136 numbers each) are needed twice, for the search and the
check: they are spilled to a temporary file as they stream, so memory holds the
64-number embeddings and one block at a time, not 1.25 GB per 100,000 images.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .nearcopies import (
    ANGLES,
    CANDIDATE_BLOCK,
    TWIN_RANK,
    RobustScan,
    generated_side,
    transformed_crops,
)
from .runtime import return_freed_memory
from .settings import NearCopySearch
from .similarity import Rows, as_rows

SEARCH_DIM = 64  # numbers per embedding: 64 kept every near-copy pair on brainmri64
COARSE_SHIFTS = range(-2, 3, 2)  # the indexed moves: every turn with these shifts in y, x
MOVES = len(ANGLES) * len(COARSE_SHIFTS) ** 2  # 27 of the scan's 147
# candidate moves searched per generated image: 24 missed one planted canary of 135 on
# dcgan-1000 (benchmarks/nearcopy_index.py recall), 48 none
GENERATED_NEIGHBOURS = 48
CANDIDATE_NEIGHBOURS = 8  # generated images searched per candidate move
BASIS_ROWS = 8192  # candidate moves the projection is fitted on, at most
BASIS_SEED = 0
# The scan searches an index above this many generated x candidate pairs, and compares
# every pair below it (exact in every number, and as fast there).
INDEX_ABOVE = 1 << 24


def chosen_search(asked: NearCopySearch, generated: int, candidates: int) -> NearCopySearch:
    """`auto`: every pair up to INDEX_ABOVE pairs, the index above."""
    if asked is not NearCopySearch.AUTO:
        return asked
    if generated * candidates > INDEX_ABOVE:
        return NearCopySearch.INDEX
    return NearCopySearch.EXHAUSTIVE


def search_identity(search: NearCopySearch) -> str:
    """What a cached scan or threshold depends on in the search: the index's settings."""
    if search is not NearCopySearch.INDEX:
        return str(search)
    settings = (SEARCH_DIM, list(COARSE_SHIFTS), GENERATED_NEIGHBOURS, CANDIDATE_NEIGHBOURS)
    cells = (BASIS_ROWS, BASIS_SEED, FLAT_ROWS, CELLS_PER_ROOT, PROBES, KMEANS_ROUNDS)
    return f"{search} {settings} {cells}"


class Projection:
    """x -> normalise((x - mean) @ basis): the search embedding."""

    @classmethod
    def fit(cls, rows: torch.Tensor, dim: int = SEARCH_DIM, seed: int = BASIS_SEED) -> Projection:
        """The `dim` main directions of `rows` (N, D), float64, centred in place: a
        randomized range finder with two power iterations (Halko et al. 2011), seeded."""
        x = rows.double()
        mean = x.mean(dim=0)
        x -= mean
        dim = min(dim, *x.shape)
        width = min(dim + 16, *x.shape)  # oversampled: the range is found more surely
        g = torch.Generator().manual_seed(seed)
        y = x @ torch.randn(x.shape[1], width, generator=g, dtype=torch.float64)
        for _ in range(2):
            q, _ = torch.linalg.qr(y)
            y = x @ (x.T @ q)
        q, _ = torch.linalg.qr(y)
        _, _, vh = torch.linalg.svd(q.T @ x, full_matrices=False)
        basis = vh[:dim].T.float().contiguous()
        return cls(basis, (mean.float() @ basis)[None])

    def __init__(self, basis: torch.Tensor, shift: torch.Tensor):
        self.basis, self.shift = basis, shift

    def __call__(self, features: torch.Tensor) -> np.ndarray:
        # (x - mean) @ basis without a centred copy of x (100 MB per block of 8,192)
        embedded = F.normalize(features.float() @ self.basis - self.shift, dim=1)
        return np.ascontiguousarray(embedded.numpy(), dtype=np.float32)


def candidate_moves(candidates: torch.Tensor, block: int = 256):
    """(MOVES x len, D) features of the candidates' indexed moves, candidate-major, a
    block of candidates at a time: 87 MB at 64 px, over glibc's largest heap block, so
    that each is mapped and unmapped whole (smaller ones stayed in the heap, 1 GB of
    them at ImageCLEF size)."""
    for c0 in range(0, len(candidates), block):
        moves = transformed_crops(candidates[c0 : c0 + block], COARSE_SHIFTS)  # (27, b, D)
        yield moves.transpose(0, 1).reshape(-1, moves.shape[2])


def fit_projection(candidates: torch.Tensor) -> Projection:
    """The projection, fitted on the moves of candidates spread evenly over all."""
    chosen = candidates[:: max(1, math.ceil(len(candidates) * MOVES / BASIS_ROWS))]
    rows, at = None, 0
    for block in candidate_moves(chosen):  # filled in place: one float64 copy, not three
        if rows is None:
            rows = torch.empty(len(chosen) * MOVES, block.shape[1], dtype=torch.float64)
        rows[at : at + len(block)] = block
        at += len(block)
    return Projection.fit(rows)


class Spill:
    """Rows appended to a temporary file and gathered back by index."""

    def __init__(self, folder: Path, rows: int, dim: int):
        self.path = folder / "generated-features.npy"
        self.array = np.lib.format.open_memmap(
            self.path, mode="w+", dtype=np.float32, shape=(max(1, rows), dim)
        )
        self.count = 0

    def append(self, block: torch.Tensor) -> None:
        self.array[self.count : self.count + len(block)] = block.float().numpy()
        self.count += len(block)

    def gather(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.array[indices])


FLAT_ROWS = 32768  # an index of more rows is searched by cells (IVF), fewer exhaustively
CELLS_PER_ROOT = 4  # cells: 4 sqrt(rows) (about 250 rows each at 100,000 rows)
PROBES = 16  # cells searched per query
KMEANS_ROUNDS = 8


def _cells(rows: torch.Tensor, count: int, seed: int = BASIS_SEED) -> torch.Tensor:
    """`count` unit centroids of unit rows by spherical k-means, seeded and in torch, so
    the same rows give the same cells (FAISS's k-means may order its sums by thread)."""
    g = torch.Generator().manual_seed(seed)
    sample = rows[:: max(1, len(rows) // (32 * count))]
    centroids = sample[torch.randperm(len(sample), generator=g)[:count]].clone()
    for _ in range(KMEANS_ROUNDS):
        nearest = torch.cat([(part @ centroids.T).argmax(dim=1) for part in sample.split(8192)])
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample)
        filled = torch.bincount(nearest, minlength=count)[:, None] > 0
        centroids = torch.where(filled, F.normalize(sums, dim=1), centroids)
    return centroids


def _search(index_rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions of each query's k nearest index rows by inner product (FAISS): every
    row compared for a small index; for a large one, the rows of the PROBES cells
    nearest the query (an inverted file, IndexIVFFlat), which is where a near-copy's
    rows are. -1 where fewer than k rows were found."""
    import faiss

    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    dim = index_rows.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    if len(index_rows) <= FLAT_ROWS:
        index = quantizer
    else:
        count = round(CELLS_PER_ROOT * math.sqrt(len(index_rows)))
        quantizer.add(_cells(torch.from_numpy(index_rows), count).numpy())
        index = faiss.IndexIVFFlat(quantizer, dim, count, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True  # the cells are given
        index.nprobe = PROBES
    index.add(index_rows)
    _, found = index.search(queries, min(k, len(index_rows)))
    return found


def shortlist_pairs(
    generated_embedded: np.ndarray, candidate_embedded: np.ndarray, per: int
) -> np.ndarray:
    """The (candidate, generated) pairs worth checking, sorted, without repeats:
    each generated image's nearest candidate moves and each move's nearest generated
    images. `candidate_embedded` holds `per` moves of each candidate, candidate-major."""
    g, n = len(generated_embedded), len(candidate_embedded) // per
    moves = _search(candidate_embedded, generated_embedded, GENERATED_NEIGHBOURS)
    from_generated = (moves // per) * g + np.arange(g)[:, None]
    images = _search(generated_embedded, candidate_embedded, CANDIDATE_NEIGHBOURS)
    from_candidates = np.repeat(np.arange(n), per)[:, None] * g + images
    keys = np.concatenate([from_generated[moves >= 0], from_candidates[images >= 0]])
    return np.unique(keys)  # candidate * G + generated: sorted by candidate, then image


@dataclass
class Checked:
    """The shortlisted pairs, each checked exactly: pair p is generated row image[p]
    against candidate owner[p], similarity sims[p]; `count` generated rows were read."""

    owner: np.ndarray
    image: np.ndarray
    sims: np.ndarray
    count: int


@torch.inference_mode()
def shortlisted(
    generated: torch.Tensor | Rows,
    candidates: torch.Tensor,
    block: int = 8192,
    progress: Callable[[int, int], None] | None = None,
) -> Checked:
    """The pairs worth checking, found through the index, checked exactly."""
    return_freed_memory()  # what the stages before freed: this one's blocks reuse it
    generated = as_rows(generated)
    projection = fit_projection(candidates)
    candidate_embedded = np.concatenate([projection(m) for m in candidate_moves(candidates)])
    total = len(generated)
    with tempfile.TemporaryDirectory(prefix="gan-privacy-scan-") as folder:
        spill, embedded = None, []
        if progress is not None:
            progress(0, total)
        for rows in generated.blocks(block):
            if spill is None:
                spill = Spill(Path(folder), total, rows.shape[1])
            spill.append(rows)
            embedded.append(projection(rows))
            if progress is not None:
                progress(spill.count, total)
        if spill is None or spill.count == 0:
            nothing = np.zeros(0, np.int64)
            return Checked(nothing, nothing, np.zeros(0, np.float32), 0)
        pairs = shortlist_pairs(np.concatenate(embedded), candidate_embedded, MOVES)
        owner, image = pairs // spill.count, pairs % spill.count
        return Checked(owner, image, _check(owner, image, spill, candidates), spill.count)


def _check(owner: np.ndarray, image: np.ndarray, spill: Spill, candidates) -> np.ndarray:
    """Each pair's similarity as the exhaustive scan computes it: the generated row
    against every one of the candidate's 147 moves, the best (float32)."""
    sims = np.empty(len(owner), np.float32)
    bounds = np.searchsorted(owner, np.arange(len(candidates) + 1))
    for c0 in range(0, len(candidates), CANDIDATE_BLOCK):
        bank = transformed_crops(candidates[c0 : c0 + CANDIDATE_BLOCK])  # (147, b, D)
        for j in range(bank.shape[1]):
            lo, hi = bounds[c0 + j], bounds[c0 + j + 1]
            if lo < hi:
                rows = spill.gather(image[lo:hi])
                sims[lo:hi] = (rows @ bank[:, j].T).amax(dim=1).numpy()
        return_freed_memory()  # the gathers' few MB each, freed
    return sims


def indexed_scan(
    generated: torch.Tensor | Rows,
    candidates: torch.Tensor,
    k: int = 3,
    block: int = 8192,
    progress: Callable[[int, int], None] | None = None,
) -> RobustScan:
    """robust_scan's result (nearcopies.RobustScan) from the shortlisted pairs only: each
    candidate's k best matches (ties: the first generated image) and each generated
    image's best match (ties: the first candidate) among the pairs checked; every other
    pair counts as unrelated (-inf, index 0 where a candidate has fewer than k)."""
    checked = shortlisted(generated, candidates, block, progress)
    owner, image, sims, count = checked.owner, checked.image, checked.sims, checked.count
    n, k = len(candidates), min(k, count)
    top = torch.full((n, k), -math.inf)
    top_index = torch.zeros((n, k), dtype=torch.long)
    rows, rank, order = _ranked(owner, image, sims, n)
    keep = rank < k
    top[rows[keep], rank[keep]] = torch.from_numpy(sims[order][keep])
    top_index[rows[keep], rank[keep]] = torch.from_numpy(image[order][keep])
    best = torch.full((count,), -math.inf)
    match = torch.zeros(count, dtype=torch.long)
    rows, rank, order = _ranked(image, owner, sims, count)
    first = order[rank == 0]
    best[image[first]] = torch.from_numpy(sims[first])
    match[image[first]] = torch.from_numpy(owner[first])
    return RobustScan(top, top_index, best, match)


def _ranked(by: np.ndarray, then: np.ndarray, sims: np.ndarray, n: int):
    """Pairs grouped by `by` (0 .. n-1), most similar first, ties by `then`: each pair's
    group, its rank in the group, and the order that sorts them so."""
    order = np.lexsort((then, -sims, by))
    groups = by[order]
    rank = np.arange(len(order)) - np.searchsorted(groups, np.arange(n))[groups]
    return groups, rank, order


def indexed_reference(
    candidates: torch.Tensor, groups: Sequence[object] | None = None, rank: int = TWIN_RANK
) -> tuple[float, tuple[int, int] | None]:
    """nearcopies.real_pair_reference through the index: each candidate's `rank`-th best
    match among the other candidates (of other patients, with `groups`) that its
    shortlist holds, the largest of them and which two candidates they are."""
    checked = shortlisted(generated_side(candidates), candidates)
    owner, image, sims = checked.owner, checked.image, checked.sims
    apart = owner != image
    if groups is not None and any(g is not None for g in groups):
        codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        group_of = np.array([codes[g] for g in groups])
        apart &= group_of[owner] != group_of[image]
    owner, image, sims = owner[apart], image[apart], sims[apart]
    rows, ranks, order = _ranked(image, owner, sims, len(candidates))
    kth = order[ranks == rank - 1]
    if len(kth) == 0:
        return -math.inf, None
    best = kth[np.lexsort((image[kth], -sims[kth]))[0]]  # the first of equals
    return float(sims[best]), (int(image[best]), int(owner[best]))
