"""Membership attacks: each real candidate gets a score, higher = more likely a member.

An attack sees what an outsider would hold (the generated images) and the
candidates; it never sees their labels. Attacks that learn from labels must be
cross-fitted (see metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .similarity import nearest_neighbours


@dataclass
class AttackScores:
    """One attack's scores for the candidates, and the evidence behind them."""

    name: str
    description: str
    scores: np.ndarray  # (C,), higher = more likely a member
    # for each candidate, its nearest generated images and their similarities
    neighbour_indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), int))
    neighbour_similarities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def nearest_neighbour_attack(
    candidates: torch.Tensor,
    generated: torch.Tensor,
    device: torch.device | str = "cpu",
    k: int = 1,
    keep_neighbours: int = 3,
) -> AttackScores:
    """The seed's attack: a candidate's score is its cosine similarity to the
    nearest generated image (the mean over the k nearest when k > 1)."""
    values, indices = nearest_neighbours(candidates, generated, max(k, keep_neighbours), device)
    return AttackScores(
        name="nearest-neighbour",
        description=f"cosine similarity to the {'nearest' if k == 1 else f'{k} nearest'} "
        "generated image(s)",
        scores=values[:, :k].mean(dim=1).numpy().astype(np.float64),
        neighbour_indices=indices.numpy(),
        neighbour_similarities=values.numpy().astype(np.float64),
    )
