"""Nearest generated neighbours of each candidate, in bounded memory.

Cosine similarities are computed block by block on the device: a block of
candidates against a block of generated images, keeping only a running top-k.
Memory is O(block x block), whatever the number of generated images.
"""

from __future__ import annotations

import torch


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
            merged_v = torch.cat([best_v, v], dim=1)
            merged_i = torch.cat([best_i, i + r0], dim=1)
            best_v, pos = merged_v.topk(k, dim=1)
            best_i = merged_i.gather(1, pos)
        values[q0 : q0 + len(q)] = best_v.cpu()
        indices[q0 : q0 + len(q)] = best_i.cpu()
    return values, indices
