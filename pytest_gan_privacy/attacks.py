"""Membership attacks: every score a real candidate gets, higher = more likely a member.

An attack sees what an outsider would hold (the generated images) and the
candidates, never their labels, so its scores need no cross-fitting; what is learned
from labels (thresholds, the choice of attack) is cross-fitted in metrics.py and
gate.py.

In each feature space (the encoder declares which of these apply, `Encoder.attacks`):
- nearest-neighbour: similarity to the nearest generated image, the attack of the seed
  method (the CLEF 2024 working note "Classification of Real and Generated Images based
  on Feature Similarity": MAE features, cosine similarity, a threshold);
- calibrated: similarity to the generated images minus similarity to other real
  images (GAN-Leaks' calibration, DOMIAS' ratio in spirit): an image that resembles
  everything is not evidence of a leak;
- retrieval: each generated image votes for the candidates most like it (the VCMI
  team's rule, with soft votes): a generator covers its training images more densely.
And beside the feature spaces, near-copy: the best match allowing small shifts and
turns, from the near-copy scan (nearcopies.py).

Attack names ("patches calibrated", "near-copy") are a public interface: the JSON and
the report list them.

Every attack here beats chance on some measured scenario: one that never does only adds
noise to the gate's per-fold choice. The MAE's reconstruction error (how well the MAE
rebuilds a candidate from a quarter of its patches) is not an attack for that reason:
AUC 0.46-0.59 on brainmri64, at chance on another CT collection (docs/measurements.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .encoders import CALIBRATED, NEAREST, RETRIEVAL, Encoder
from .nearcopies import ANGLES, MAX_SHIFT, RobustScan
from .similarity import GeneratedScan, MappedRows, Rows, nearest_neighbours, scan_generated

CALIBRATION_K = 3  # neighbours averaged on both sides of the calibrated score
RETRIEVAL_TEMPERATURE = 0.01  # the softmax of the retrieval votes


@dataclass
class AttackScores:
    """One attack's scores for the candidates, and the evidence behind them."""

    name: str
    description: str
    scores: np.ndarray  # (C,), higher = more likely a member
    # for each candidate, its nearest generated images and their similarities
    neighbour_indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), int))
    neighbour_similarities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    # the feature space whose work (training, encoding, scan) it needs, for its cost;
    # "" for the gate, which needs them all
    space: str = ""


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


CENTRING_ROWS = 512


def centre_on_candidates(
    generated: torch.Tensor | Rows,
    candidates: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> tuple[torch.Tensor | Rows, torch.Tensor, torch.Tensor | None]:
    """Subtract the candidates' mean feature from every row, and L2-normalise again.

    What all real images share (the average anatomy) is not evidence that one of them
    was copied; removing it lets similarity weigh what is individual. The mean is over
    all candidates, both classes, so no label is used. (Not the generated images' mean:
    a collapsed generator's mean is made of the images it memorised.) On brainmri64 it
    raised local-structure AUCs by up to 0.02 and lowered none by more than 0.01.
    Streamed generated rows (similarity.Rows) are centred block by block as they come.
    """
    mean = candidates.mean(dim=0, keepdim=True)

    def centred(x: torch.Tensor) -> torch.Tensor:
        # in slices: one new (N, D) buffer and no temporaries of that size (20,000 MAE
        # features are 650 MB; slices of 4,096 rows cost 270 MB at the peak of an
        # ImageCLEF-size audit)
        out = torch.empty_like(x)
        for i in range(0, len(x), CENTRING_ROWS):
            out[i : i + CENTRING_ROWS] = F.normalize(x[i : i + CENTRING_ROWS] - mean, dim=1)
        return out

    streamed = not isinstance(generated, torch.Tensor)
    return (
        MappedRows(generated, centred) if streamed else centred(generated),
        centred(candidates),
        None if reference is None else centred(reference),
    )


def similarity_attacks(
    encoder: Encoder,
    candidates: torch.Tensor,
    generated: torch.Tensor | Rows,
    device: torch.device | str = "cpu",
    reference: torch.Tensor | None = None,
) -> list[AttackScores]:
    """The nearest-neighbour, calibrated and retrieval attacks that `encoder.attacks`
    names, from its L2-normalised features of the candidates and the generated images
    (centred first when `encoder.centre`); the generated ones in memory or streamed
    (similarity.Rows: read once, block by block).

    `reference`: features of extra real images that are neither candidates nor training
    images; without them the calibration compares each candidate with the other
    candidates (leave-one-out, labels-blind).
    """
    space, kinds = encoder.name, encoder.attacks
    if not {NEAREST, CALIBRATED, RETRIEVAL} & set(kinds):
        return []
    if encoder.centre:
        generated, candidates, reference = centre_on_candidates(generated, candidates, reference)
    k, t = CALIBRATION_K, RETRIEVAL_TEMPERATURE
    scan = scan_generated(candidates, generated, k, t, device)
    out = []
    if NEAREST in kinds:
        out.append(_nearest(space, scan))
    if CALIBRATED in kinds:
        out.append(_calibrated(space, scan, candidates, reference, device))
    if RETRIEVAL in kinds:
        out.append(_retrieval(space, scan))
    return out


def _nearest(space: str, scan: GeneratedScan) -> AttackScores:
    return AttackScores(
        name=f"{space} {NEAREST}",
        space=space,
        description=f"cosine similarity of the {space} features to the nearest generated image",
        scores=_numpy(scan.top_values[:, 0]),
        neighbour_indices=scan.top_indices.numpy(),
        neighbour_similarities=_numpy(scan.top_values),
    )


def _calibrated(
    space: str,
    scan: GeneratedScan,
    candidates: torch.Tensor,
    reference: torch.Tensor | None,
    device: torch.device | str,
) -> AttackScores:
    k = CALIBRATION_K
    if reference is None:  # the candidate itself is its own nearest: skip it
        real, _ = nearest_neighbours(candidates, candidates, k + 1, device)
        real, against = real[:, 1:], "other candidates"
    else:
        real, _ = nearest_neighbours(candidates, reference, k, device)
        against = "reference images"
    return AttackScores(
        name=f"{space} {CALIBRATED}",
        space=space,
        description=f"mean similarity to the {k} nearest generated images minus to "
        f"the {k} nearest {against}",
        scores=_numpy(scan.top_values.mean(dim=1) - real.mean(dim=1)),
    )


def _retrieval(space: str, scan: GeneratedScan) -> AttackScores:
    return AttackScores(
        name=f"{space} {RETRIEVAL}",
        space=space,
        description="votes from the generated images: each spreads one vote over the "
        f"candidates by softmax(similarity / {RETRIEVAL_TEMPERATURE})",
        scores=_numpy(scan.soft_votes),
    )


def near_copy_attack(scan: RobustScan) -> AttackScores:
    """Each candidate's best match among the generated images over small moves: a
    memorised image comes back shifted or turned, which plain similarity misses."""
    return AttackScores(
        name="near-copy",
        space="near-copy",
        description="best local-structure similarity to a generated image over shifts of "
        f"up to {MAX_SHIFT} px and turns of {max(ANGLES):g} degrees",
        scores=_numpy(scan.candidate_best),
        neighbour_indices=scan.candidate_top_index.numpy(),
        neighbour_similarities=_numpy(scan.candidate_top),
    )
