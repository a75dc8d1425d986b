"""The near-copy search through an index: the shortlist's pairs, checked exactly, give
the exhaustive scan's near-copies."""

import numpy as np
import pytest
import torch
from helpers import audit_args, phantoms

from pytest_gan_privacy import shortlist
from pytest_gan_privacy.cli import main
from pytest_gan_privacy.nearcopies import (
    CANARY_LEVELS,
    augmented_copies,
    generated_side,
    real_pair_reference,
    robust_scan,
    transformed_crops,
)
from pytest_gan_privacy.shortlist import Projection, indexed_reference, indexed_scan


def _release():
    """Fresh images, standard and hard copies of candidates, and one candidate copied
    many times (a collapsed generator)."""
    candidates = phantoms(60, 1)
    copies = augmented_copies(candidates[:12], seed=3)
    hard = augmented_copies(candidates[5:17], seed=4, recipe=CANARY_LEVELS["hard"])
    many = augmented_copies(candidates[20:21].expand(30, -1, -1, -1), seed=5)
    return torch.cat([phantoms(80, 0), copies, hard, many]), candidates


def _exact(generated, candidates, pairs):
    """The detector's similarity of given (generated, candidate) pairs, one at a time."""
    side = generated_side(generated)
    return [
        float((transformed_crops(candidates[c : c + 1])[:, 0] @ side[g]).max()) for g, c in pairs
    ]


@pytest.fixture(params=["flat", "cells"])
def search(request, monkeypatch):
    """The index searched exhaustively, and by cells (an inverted file), as it is above
    FLAT_ROWS rows."""
    if request.param == "cells":
        monkeypatch.setattr(shortlist, "FLAT_ROWS", 16)
    return request.param


def test_the_shortlist_finds_every_close_pair_and_checks_it_exactly(search):
    generated, candidates = _release()
    side = generated_side(generated)
    exhaustive = robust_scan(side, candidates, screen=False)
    indexed = indexed_scan(side, candidates, block=50)
    # every generated image well matched (a copy) has its best candidate found, exactly
    close = torch.nonzero(exhaustive.generated_best > 0.8).flatten()
    assert len(close) >= 40
    assert torch.equal(indexed.generated_match[close], exhaustive.generated_match[close])
    assert torch.allclose(
        indexed.generated_best[close], exhaustive.generated_best[close], atol=1e-6
    )
    # the collapsed generator's 30 copies of one candidate are its top matches
    assert set(indexed.candidate_top_index[20].tolist()) <= set(range(104, 134))
    # what the index reports is an exact similarity (never above the exhaustive best)
    pairs = [(int(g), c) for c in range(0, 60, 7) for g in indexed.candidate_top_index[c]]
    values = [float(indexed.candidate_top[c, i]) for c in range(0, 60, 7) for i in range(3)]
    assert np.allclose(values, _exact(generated, candidates, pairs), atol=1e-5)
    assert (indexed.generated_best <= exhaustive.generated_best + 1e-6).all()
    assert (indexed.candidate_best <= exhaustive.candidate_best + 1e-6).all()


def test_the_shortlist_is_the_same_every_time(search):
    generated, candidates = _release()
    side = generated_side(generated)
    first, again = indexed_scan(side, candidates), indexed_scan(side, candidates, block=7)
    for name, tensor in first.tensors().items():
        assert torch.equal(tensor, again.tensors()[name]), name


def test_the_projection_keeps_the_main_directions_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    directions = torch.linalg.qr(torch.randn(50, 3, generator=g))[0]  # 3 of 50 dimensions
    rows = torch.randn(400, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0]) @ directions.T
    rows += 0.01 * torch.randn(400, 50, generator=g)
    fitted = Projection.fit(rows, dim=3)
    # the basis spans the planted directions
    assert torch.linalg.svdvals(fitted.basis.T @ directions).min() > 0.99
    again = Projection.fit(rows, dim=3)
    assert torch.equal(fitted.basis, again.basis)


def test_an_audit_through_the_index_lists_the_exhaustive_scans_near_copies(
    leaky_release, tmp_path, capsys
):
    """The command line with --near-copy-search index against the default (every pair
    at this size): the same near-copies, pairs and flagged candidates."""
    import json

    outputs = {}
    for search in ("index", "auto"):
        out = tmp_path / f"{search}.json"
        args = ["audit", *audit_args(leaky_release), "--json", str(out), "--quiet"]
        args += ["--report", str(out.with_suffix(".html"))]
        main([*args, "--near-copy-search", search, "--features", "pixels"])
        outputs[search] = json.loads(out.read_text())["near_copies"]
    capsys.readouterr()
    indexed, exhaustive = outputs["index"], outputs["auto"]
    assert exhaustive["count"] > 20
    assert indexed["count"] == exhaustive["count"]
    assert indexed["copied"] == exhaustive["copied"]
    pair = [(p["generated"], p["candidate"]) for p in indexed["pairs"]]
    assert pair == [(p["generated"], p["candidate"]) for p in exhaustive["pairs"]]


def test_the_reference_through_the_index_is_the_exhaustive_one(search):
    """Near-twins among the candidates set the real-pair reference: the index finds the
    same pair, with and without patients."""
    candidates = phantoms(50, 4)
    twins = augmented_copies(candidates[:6], seed=6, recipe=CANARY_LEVELS["hard"])
    thirds = augmented_copies(candidates[:6], seed=7, recipe=CANARY_LEVELS["hard"])
    candidates = torch.cat([candidates, twins, thirds])
    groups = [f"p{i % 50}" for i in range(len(candidates))]  # a twin is its original's patient
    for patients in (None, groups):
        exhaustive = real_pair_reference(candidates, groups=patients, screen=False)
        indexed = indexed_reference(candidates, patients)
        assert indexed[1] == exhaustive[1]
        assert indexed[0] == pytest.approx(exhaustive[0], abs=1e-6)
