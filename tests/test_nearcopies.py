"""The near-copy detector, its threshold and the power check, on synthetic phantoms."""

import math

import pytest
import torch
from helpers import phantoms

from pytest_gan_privacy import nearcopies
from pytest_gan_privacy.nearcopies import (
    CANARY_LEVELS,
    COPY_QUANTILE,
    TWIN_RANK,
    CopyRecipe,
    augmented_copies,
    copy_level,
    find_near_copies,
    generated_side,
    near_copy_threshold,
    own_similarity,
    pick_canaries,
    power_check,
    real_pair_reference,
    robust_scan,
    screen_margin,
    transformed_crops,
)


def _brute_force(generated: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(G, C) the detector's similarity of every generated image to every candidate."""
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


def _release_with_copies():
    """Generated images: copies (standard and hard) of some candidates among fresh ones,
    so that near-ties at the top of the scan are many."""
    candidates = phantoms(70, 1)  # three blocks of candidates
    copies = augmented_copies(candidates[:12], seed=3)
    hard = augmented_copies(candidates[5:17], seed=4, recipe=CANARY_LEVELS["hard"])
    return torch.cat([phantoms(30, 0), copies, hard]), candidates


def test_the_bf16_margin_bounds_the_error_of_every_similarity():
    generated, candidates = _release_with_copies()
    bank = transformed_crops(candidates)  # (T, C, D)
    queries = generated_side(generated)
    exact = torch.einsum("gd,tcd->gtc", queries.double(), bank.double())
    rough = torch.einsum("gd,tcd->gtc", queries.bfloat16(), bank.bfloat16()).double()
    assert (rough - exact).abs().max() < screen_margin(queries.shape[1])


@pytest.mark.parametrize("chunk_blocks", [16, 1])  # one chunk; chunks of 16 rows
def test_the_bf16_screen_gives_the_float32_scan(chunk_blocks, monkeypatch):
    generated, candidates = _release_with_copies()
    side = generated_side(generated)
    exact = robust_scan(side, candidates, block=16, screen=False)
    monkeypatch.setattr(nearcopies, "CHUNK_BLOCKS", chunk_blocks)
    screened = robust_scan(side, candidates, block=16, screen=True)
    assert torch.equal(screened.candidate_top_index, exact.candidate_top_index)
    assert torch.equal(screened.generated_match, exact.generated_match)
    assert torch.allclose(screened.candidate_top, exact.candidate_top, rtol=0, atol=1e-6)
    assert torch.allclose(screened.generated_best, exact.generated_best, rtol=0, atol=1e-6)


def test_the_bf16_screen_gives_the_float32_reference():
    generated, candidates = _release_with_copies()
    both = torch.cat([candidates, generated[30:42]])  # candidates with twins among them
    for rank in (1, 2):
        value, pair = real_pair_reference(both, rank=rank, screen=True)
        exact_value, exact_pair = real_pair_reference(both, rank=rank, screen=False)
        assert pair == exact_pair and value == pytest.approx(exact_value, abs=1e-6)


def test_the_reference_is_the_largest_twin_rank_th_best_real_pair():
    candidates = phantoms(40, 6)  # two blocks of candidates
    full = _brute_force(candidates, candidates)
    full.fill_diagonal_(-math.inf)
    kth = full.topk(TWIN_RANK, dim=1).values[:, TWIN_RANK - 1]
    value, (query, other) = real_pair_reference(candidates)
    assert abs(value - float(kth.max())) < 1e-5
    assert query == int(kth.argmax())
    assert other == int(full[query].topk(TWIN_RANK).indices[TWIN_RANK - 1])
    assert abs(real_pair_reference(candidates, rank=1)[0] - float(full.max())) < 1e-5


def test_near_twins_on_both_sides_do_not_move_the_reference_but_raise_the_old_maximum():
    """A slice of a series has a near-twin on each side: skipping one is not enough."""
    candidates = phantoms(40, 6)
    twins = [
        augmented_copies(candidates[:3], seed=seed, recipe=CopyRecipe(shift=1, angle=1))
        for seed in (9, 10)
    ]
    with_twins = torch.cat([candidates, *twins])
    before, after = (
        real_pair_reference(candidates, rank=1)[0],
        real_pair_reference(with_twins, rank=1)[0],
    )
    assert after > before + 0.05
    assert real_pair_reference(with_twins, rank=2)[0] > after - 0.05  # one skip: a twin still
    # two skips: unrelated pairs set it, at most the most similar of them without twins
    assert real_pair_reference(with_twins)[0] <= before + 1e-5


def test_pairs_within_one_patient_are_not_real_pairs():
    candidates = phantoms(20, 6)
    twins = augmented_copies(candidates, seed=9, recipe=CopyRecipe(shift=1, angle=1))
    both = torch.cat([candidates, twins])  # every image has its twin: rank 2 sees the 2nd
    groups = [f"patient {i % 20}" for i in range(40)]
    apart = real_pair_reference(both, groups=groups)[0]
    assert apart < real_pair_reference(both, rank=1)[0] - 0.05


def test_the_copy_level_is_a_low_quantile_of_copies_against_their_originals():
    candidates = phantoms(30, 7)
    level = copy_level(candidates, seed=5)
    per = min(8, math.ceil(400 / 30))  # several copies each, so the quantile is not noise
    originals = candidates.repeat(per, 1, 1, 1)
    sims = own_similarity(augmented_copies(originals, 5), originals)
    assert level == float(torch.quantile(sims.double(), COPY_QUANTILE))
    assert (sims > level).float().mean() >= 1 - COPY_QUANTILE - 0.01
    full = _brute_force(originals[:5], originals[:5])
    assert torch.allclose(own_similarity(originals[:5], originals[:5]), full.diagonal(), atol=1e-5)


def test_moved_copies_are_found_and_fresh_images_are_not():
    """The threshold sits at the copy level: about 95 % of standard copies are above it,
    and no fresh image of the same population."""
    members, others = phantoms(20, 2), phantoms(20, 3)
    candidates = torch.cat([members, others])
    threshold = near_copy_threshold(candidates, seed=1)
    assert threshold.value == max(threshold.reference, threshold.copy_level)
    copies = augmented_copies(members, seed=4)
    fresh = phantoms(60, 5)
    near = find_near_copies(
        robust_scan(generated_side(torch.cat([copies, fresh])), candidates), threshold
    )
    assert 17 <= len(near) and set(near.generated_index) <= set(range(20))  # no fresh one
    assert near.candidate_index == [g for g in near.generated_index]  # each its own member
    assert set(near.copied) == set(near.generated_index)
    assert all(s > threshold.value for s in near.similarity)


def test_a_copy_flags_its_member_even_when_a_twin_matches_it_better():
    members = phantoms(10, 2)
    twin = augmented_copies(members[:1], seed=9, recipe=CopyRecipe(shift=0.5, angle=0.5))
    candidates = torch.cat([members, twin, phantoms(10, 3)])
    copy = augmented_copies(members[:1], seed=4)
    threshold = near_copy_threshold(candidates, seed=1)
    near = find_near_copies(robust_scan(generated_side(copy), candidates), threshold)
    assert 0 in near.copied and 10 in near.copied  # the member and its twin


def test_the_power_check_finds_standard_and_exact_canaries_at_every_level_it_reports():
    candidates = phantoms(30, 7)
    threshold = near_copy_threshold(candidates, seed=1)
    members = pick_canaries([f"{i:064x}" for i in range(15)], count=10, seed=0)
    check = power_check(candidates, members, threshold, seed=0)
    assert set(check.levels) == set(CANARY_LEVELS)
    assert check.levels["exact"].found == 10
    assert check.planted == 10 and check.found >= 9 and check.fraction >= 0.9
    assert check.levels["hard"].found <= check.levels["standard"].found


def test_an_impossible_threshold_finds_no_canary():
    candidates = phantoms(30, 7)
    threshold = near_copy_threshold(candidates, seed=1)
    blind = type(threshold)(value=1.0, reference=1.0, copy_level=threshold.copy_level)
    check = power_check(candidates, [0, 1, 2], blind, seed=0)
    assert check.found == 0 and blind.limited_by == "real pairs"


def test_canaries_are_chosen_by_content_not_position_and_duplicates_once():
    hashes = [f"{i:064x}" for i in range(20)]
    chosen = {hashes[i] for i in pick_canaries(hashes, 5, seed=1)}
    reversed_hashes = hashes[::-1]
    assert chosen == {reversed_hashes[i] for i in pick_canaries(reversed_hashes, 5, seed=1)}
    doubled = sorted(hashes + hashes[:10])
    picked = [doubled[i] for i in pick_canaries(doubled, 20, seed=1)]
    assert len(picked) == len(set(picked)) == 20


def test_the_standard_recipe_is_the_copies_scenarios():
    x = phantoms(4, 1)
    assert torch.equal(augmented_copies(x, 3), augmented_copies(x, 3, CANARY_LEVELS["standard"]))
    assert torch.equal(augmented_copies(x, 3, CANARY_LEVELS["exact"]), x)


def test_the_bank_of_a_block_of_candidates_is_that_of_its_own_images():
    """A block is a view into the candidates (an offset into their storage): its
    transforms are those of the same images on their own."""
    candidates = phantoms(10, 3)
    assert torch.equal(transformed_crops(candidates[6:9]), transformed_crops(candidates[6:9] + 0))


def test_a_coarser_range_of_shifts_is_a_subset_of_the_transforms():
    images = phantoms(4, 2)
    side = 2 * nearcopies.MAX_SHIFT + 1
    coarse = range(-2, 3, 2)
    picked = [
        a * side * side + (dy + nearcopies.MAX_SHIFT) * side + dx + nearcopies.MAX_SHIFT
        for a in range(len(nearcopies.ANGLES))
        for dy in coarse
        for dx in coarse
    ]
    assert torch.equal(transformed_crops(images, coarse), transformed_crops(images)[picked])
