"""The near-copy detector and the power check, on synthetic phantoms."""

import torch
from helpers import phantoms

from pytest_gan_privacy.nearcopies import (
    augmented_copies,
    find_near_copies,
    generated_side,
    pick_canaries,
    power_check,
    real_pair_threshold,
    robust_scan,
)


def _brute_force(generated: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    from pytest_gan_privacy.nearcopies import transformed_crops

    bank = transformed_crops(candidates)  # (T, C, D)
    return torch.einsum("gd,tcd->gtc", generated_side(generated), bank).amax(dim=1)


def test_blockwise_scan_equals_the_full_comparison():
    generated, candidates = phantoms(9, 0), phantoms(40, 1)
    scan = robust_scan(generated_side(generated), candidates, block=4)
    full = _brute_force(generated, candidates)
    assert torch.allclose(scan.generated_best, full.amax(dim=1), atol=1e-5)
    assert torch.equal(scan.generated_match, full.argmax(dim=1))
    assert torch.allclose(scan.candidate_best, full.amax(dim=0), atol=1e-5)
    assert torch.equal(scan.candidate_top_index, full.topk(3, dim=0).indices.T)


def test_moved_copies_are_found_and_fresh_images_are_not():
    members, others = phantoms(20, 2), phantoms(20, 3)
    candidates = torch.cat([members, others])
    threshold = real_pair_threshold(candidates)
    copies = augmented_copies(members[:8], seed=4)
    fresh = phantoms(30, 5)
    near = find_near_copies(
        robust_scan(generated_side(torch.cat([copies, fresh])), candidates), threshold
    )
    assert sorted(near.generated_index) == list(range(8))
    assert sorted(near.candidate_index) == list(range(8))
    assert all(s > threshold for s in near.similarity)


def test_the_threshold_ignores_each_image_itself():
    candidates = phantoms(40, 6)  # two blocks of candidates
    full = _brute_force(candidates, candidates)
    full.fill_diagonal_(-float("inf"))
    assert abs(real_pair_threshold(candidates) - float(full.max())) < 1e-5
    assert real_pair_threshold(candidates) < 0.99


def test_power_check_finds_planted_copies():
    candidates = phantoms(30, 7)
    threshold = real_pair_threshold(candidates)
    members = pick_canaries([f"{i:064x}" for i in range(15)], count=5, seed=0)
    check = power_check(candidates, members, threshold, seed=0)
    assert check.planted == 5 and check.found == 5 and check.fraction == 1.0


def test_canaries_are_chosen_by_content_not_position():
    hashes = [f"{i:064x}" for i in range(20)]
    chosen = {hashes[i] for i in pick_canaries(hashes, 5, seed=1)}
    reversed_hashes = hashes[::-1]
    assert chosen == {reversed_hashes[i] for i in pick_canaries(reversed_hashes, 5, seed=1)}
