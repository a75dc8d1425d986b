"""Nearest generated neighbours of each candidate, in bounded memory.

Cosine similarities are computed block by block on the device: a block of
candidates against a block of generated images, keeping only a running top-k.
Memory is O(block x block), whatever the number of generated images.

The generated side need not be in memory at all: anything with `Rows`'s two methods
(features.FeatureStream reads cache packs or encodes as it goes) gives its features
block by block, so 200,000 generated images cost what 20,000 do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from .runtime import return_freed_memory


class Rows(Protocol):
    """Feature rows (N, D) that arrive in blocks, in order."""

    def __len__(self) -> int:
        """How many rows at most (images that cannot be decoded, with skip_bad, are
        left out as they are found)."""

    def blocks(self, rows: int) -> Iterator[torch.Tensor]:
        """The rows in order, `rows` at a time (the last block may be shorter)."""


class TensorRows:
    """Rows held in memory."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def blocks(self, rows: int) -> Iterator[torch.Tensor]:
        for i in range(0, len(self.features), rows):
            yield self.features[i : i + rows]


class MappedRows:
    """Rows with a row-wise function applied to each block as it arrives."""

    def __init__(self, source: Rows, function: Callable[[torch.Tensor], torch.Tensor]):
        self.source, self.function = source, function

    def __len__(self) -> int:
        return len(self.source)

    def blocks(self, rows: int) -> Iterator[torch.Tensor]:
        for block in self.source.blocks(rows):
            yield self.function(block)


def as_rows(features: torch.Tensor | Rows) -> Rows:
    return TensorRows(features) if isinstance(features, torch.Tensor) else features


# Features of generated images held at once by a scan: 32 M floats (128 MB).
MAX_BLOCK_FEATURES = 1 << 25
# Generated rows whose softmax is taken at once: the block's similarities in float64 would
# be 128 MB twice over (measured: the peak of an ImageCLEF-size audit).
SOFTMAX_ROWS = 512


def merge_top_k(
    values: torch.Tensor,
    indices: torch.Tensor,
    new_values: torch.Tensor,
    new_indices: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A running top-k, row by row: the k best of (values, new_values), with their indices."""
    merged, position = torch.cat([values, new_values], dim=1).topk(k, dim=1)
    return merged, torch.cat([indices, new_indices], dim=1).gather(1, position)


@torch.inference_mode()
def nearest_neighbours(
    queries: torch.Tensor,
    references: torch.Tensor,
    k: int = 1,
    device: torch.device | str = "cpu",
    query_block: int = 1024,
    reference_block: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities of each query row to the reference rows.

    Both inputs are L2-normalised (N, D) feature matrices. Returns (values,
    indices), each (len(queries), k), sorted from most to least similar, on the CPU.
    """
    k = min(k, len(references))
    device = torch.device(device)
    values = torch.empty(len(queries), k)
    indices = torch.empty(len(queries), k, dtype=torch.long)
    for q0 in range(0, len(queries), query_block):
        q = queries[q0 : q0 + query_block].to(device)
        best_v = torch.full((len(q), k), -float("inf"), device=device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
        for r0 in range(0, len(references), reference_block):
            sims = q @ references[r0 : r0 + reference_block].to(device).T
            v, i = sims.topk(min(k, sims.shape[1]), dim=1)
            best_v, best_i = merge_top_k(best_v, best_i, v, i + r0, k)
        values[q0 : q0 + len(q)] = best_v.cpu()
        indices[q0 : q0 + len(q)] = best_i.cpu()
    return values, indices


@dataclass
class GeneratedScan:
    """One pass over generated x candidates similarities, reduced as the attacks need."""

    top_values: torch.Tensor  # (C, k) each candidate's k best similarities to generated
    top_indices: torch.Tensor  # (C, k) and which generated images they are
    soft_votes: torch.Tensor  # (C,) each generated image's vote spread by softmax(sim / t)


@torch.inference_mode()
def scan_generated(
    candidates: torch.Tensor,
    generated: torch.Tensor | Rows,
    k: int = 3,
    temperature: float = 0.01,
    device: torch.device | str = "cpu",
    max_block_floats: int = 1 << 24,
) -> GeneratedScan:
    """Stream blocks of generated images against all candidates (L2-normalised rows).

    Memory is one block (at most `max_block_floats` similarities and MAX_BLOCK_FEATURES
    generated features), whatever the number of generated images.
    """
    device = torch.device(device)
    generated = as_rows(generated)
    k = min(k, len(generated))
    cands = candidates.to(device)
    top_v = torch.full((len(cands), k), -float("inf"), device=device)
    top_i = torch.zeros((len(cands), k), dtype=torch.long, device=device)
    soft = torch.zeros(len(cands), dtype=torch.float64, device=device)
    block = max(
        1, min(max_block_floats // max(1, len(cands)), MAX_BLOCK_FEATURES // cands.shape[1])
    )
    g0 = 0
    for rows in generated.blocks(block):
        sims = rows.to(device) @ cands.T  # (B, C)
        v, i = sims.T.topk(min(k, sims.shape[0]), dim=1)
        top_v, top_i = merge_top_k(top_v, top_i, v, i + g0, k)
        for part in sims.split(SOFTMAX_ROWS):  # float64 copies of a slice, not the block
            soft += torch.softmax(part.double().div_(temperature), dim=1).sum(dim=0)
        g0 += len(rows)
        return_freed_memory()  # the block's buffers, or the heap grows block by block
    k = min(k, g0)  # fewer rows than announced (images skipped as unreadable)
    return GeneratedScan(top_v[:, :k].cpu(), top_i[:, :k].cpu(), soft.cpu())
