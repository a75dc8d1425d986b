"""Each attack's scores, on feature vectors and scans made by hand."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pytest_gan_privacy.attacks import (
    CALIBRATION_K,
    near_copy_attack,
    similarity_attacks,
)
from pytest_gan_privacy.encoders import PatchEncoder, PixelEncoder
from pytest_gan_privacy.nearcopies import RobustScan


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(rows.float(), dim=1)


@pytest.fixture
def space():
    """30 candidates in 64 dimensions; the generated set holds 6 noisy copies of each of
    candidates 0-4 (a generator covers what it memorised densely) and 30 unrelated
    images."""
    g = torch.Generator().manual_seed(0)
    candidates = _unit(torch.randn(30, 64, generator=g))
    sources = candidates[:5].repeat_interleave(6, dim=0)
    copies = _unit(sources + 0.1 * torch.randn(30, 64, generator=g))
    generated = torch.cat([copies, _unit(torch.randn(30, 64, generator=g))])
    return candidates, generated


def test_each_space_gets_the_attacks_its_encoder_declares(space):
    candidates, generated = space
    pixels = similarity_attacks(PixelEncoder(), candidates, generated)
    patches = similarity_attacks(PatchEncoder(), candidates, generated)
    assert [a.name for a in pixels] == ["pixels nearest-neighbour"]
    assert [a.name for a in patches] == [
        "patches nearest-neighbour",
        "patches calibrated",
        "patches retrieval",
    ]


def test_copied_candidates_score_highest_in_every_similarity_attack(space):
    candidates, generated = space
    for attack in similarity_attacks(PatchEncoder(), candidates, generated):
        top5 = set(np.argsort(-attack.scores)[:5])
        assert top5 == {0, 1, 2, 3, 4}, attack.name


def test_nearest_neighbour_is_the_best_cosine_and_keeps_its_evidence(space):
    candidates, generated = space
    (nearest,) = similarity_attacks(PixelEncoder(), candidates, generated)  # not centred
    full = candidates @ generated.T
    assert np.allclose(nearest.scores, full.max(dim=1).values.numpy(), atol=1e-6)
    assert np.array_equal(nearest.neighbour_indices[:, 0], full.argmax(dim=1).numpy())
    assert nearest.neighbour_indices[0, 0] == 0  # candidate 0's nearest is its copy


def test_calibration_discounts_an_image_that_resembles_other_real_images(space):
    """Two candidates equally close to the generated images: the one with a near-twin
    among the other candidates is less suspicious."""
    candidates, generated = space
    g = torch.Generator().manual_seed(1)
    candidates = candidates.clone()
    candidates[10] = _unit(generated[40:41] + torch.randn(1, 64, generator=g))
    candidates[11] = _unit(generated[41:42] + torch.randn(1, 64, generator=g))
    candidates[12] = _unit(candidates[10:11] + 0.05 * torch.randn(1, 64, generator=g))  # twin
    nearest, calibrated, _ = similarity_attacks(PatchEncoder(), candidates, generated)
    assert abs(nearest.scores[10] - nearest.scores[11]) < 0.1
    assert calibrated.scores[10] < calibrated.scores[11] - 0.3
    assert calibrated.description.endswith(f"the {CALIBRATION_K} nearest other candidates")


def test_retrieval_spreads_one_vote_per_generated_image(space):
    candidates, generated = space
    *_, retrieval = similarity_attacks(PatchEncoder(), candidates, generated)
    assert retrieval.scores.sum() == pytest.approx(len(generated))
    assert retrieval.scores[:5].min() > np.median(retrieval.scores[5:])


def test_near_copy_attack_reads_the_scan():
    top = torch.tensor([[0.9, 0.5, 0.1], [0.4, 0.3, 0.2]])
    index = torch.tensor([[7, 2, 1], [3, 4, 5]])
    scan = RobustScan(top, index, torch.zeros(8), torch.zeros(8, dtype=torch.long))
    attack = near_copy_attack(scan)
    assert attack.name == "near-copy"
    assert np.allclose(attack.scores, [0.9, 0.4])
    assert attack.neighbour_indices.tolist() == index.tolist()
    assert "3 px" in attack.description and "3 degrees" in attack.description
