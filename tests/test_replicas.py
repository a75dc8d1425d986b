"""The replica test: members above every non-member's best match, beyond chance."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import audit_args
from PIL import Image

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.nearcopies import CopyRecipe, NearCopyThreshold, augmented_copies
from pytest_gan_privacy.replicas import REPLICA_ALPHA, all_members_on_top, replica_test
from pytest_gan_privacy.synthetic import make_release


@pytest.mark.parametrize("members, non_members", [(3, 3), (4, 2), (2, 5)])
def test_the_p_value_counts_every_arrangement(members, non_members):
    """P(the k highest are all members) over every equally likely arrangement."""
    n = members + non_members
    arrangements = list(itertools.combinations(range(n), members))  # the members' ranks
    for k in range(members + 2):
        top_all_members = sum(set(range(k)) <= set(ranks) for ranks in arrangements)
        assert all_members_on_top(k, members, non_members) == pytest.approx(
            top_all_members / len(arrangements)
        )
    assert all_members_on_top(0, members, non_members) == 1


def test_it_counts_members_above_every_non_member():
    best = np.array([0.9, 0.8, 0.7, 0.3, 0.75, 0.6, 0.5])
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    test = replica_test(best, labels)
    assert (test.level, test.above, test.members, test.non_members) == (0.75, 2, 4, 3)
    assert test.p_value == pytest.approx(4 / 7 * 3 / 6)
    assert not test.significant  # two of four members on top is no evidence
    assert replica_test(best, np.ones(7, int)) is None  # no non-member: no null


def test_with_patients_a_patient_is_one_unit():
    """Ten slices of one member patient above every non-member are one patient, not ten
    independent members: membership was drawn per patient."""
    best = np.r_[np.full(10, 0.9), np.full(10, 0.2), np.linspace(0.3, 0.5, 20)]
    labels = np.r_[np.ones(20, int), np.zeros(20, int)]
    patients = np.r_[np.zeros(10, int), np.arange(1, 11), np.arange(11, 31)]
    per_image, per_patient = replica_test(best, labels), replica_test(best, labels, patients)
    assert per_image.above == 10 and per_image.significant
    assert (per_patient.above, per_patient.members, per_patient.unit) == (1, 11, "patient")
    assert not per_patient.significant


def test_the_threshold_drops_only_for_significant_replicas():
    blind = NearCopyThreshold(value=0.85, reference=0.6, copy_level=0.85)
    labels = np.r_[np.ones(20, int), np.zeros(20, int)]
    many = np.r_[np.full(12, 0.7), np.full(8, 0.3), np.linspace(0.2, 0.5, 20)]
    few = np.r_[np.full(2, 0.7), np.full(18, 0.3), np.linspace(0.2, 0.5, 20)]
    lowered = NearCopyThreshold(0.85, 0.6, 0.85, replicas=replica_test(many, labels))
    kept = NearCopyThreshold(0.85, 0.6, 0.85, replicas=replica_test(few, labels))
    assert lowered.replicas.p_value < REPLICA_ALPHA
    assert lowered.applied == 0.5 and lowered.limited_by == "non-members"
    assert kept.applied == blind.applied == 0.85 and kept.limited_by == "copy level"


def _re_render(release: Path, count: int) -> set[str]:
    """Add to the generated images `count` members re-rendered as a diffusion model
    does (moved, turned, re-exposed, blurred, noisy: under a standard copy's level);
    their names."""
    members = sorted((release / "real" / "used").iterdir())[:count]
    pixels = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in members])
    recipe = CopyRecipe(shift=3, angle=5, exposure=0.1, noise=6 / 255, blur=1.0)
    rendered = augmented_copies(torch.from_numpy(pixels)[:, None], seed=3, recipe=recipe)
    for i, image in enumerate(rendered[:, 0]):
        out = (image.numpy() * 255).round().astype(np.uint8)
        Image.fromarray(out, mode="L").save(release / "generated" / f"r{i:03d}.png")
    return {f"used/{p.name}" for p in members}


def test_re_rendered_replicas_are_named_and_clean_releases_name_none(tmp_path, capsys):
    """Through the command line with the defaults: the members a generator re-rendered
    are named although the labels-blind threshold misses them, no non-member is, and the
    same release without them names nobody."""
    releases = {
        name: make_release(tmp_path / name, leaky=False, n_members=30, n_non_members=30, seed=5)
        for name in ("clean", "replicas")
    }
    rendered = _re_render(releases["replicas"], 20)
    found = {}
    for name, release in releases.items():
        out = tmp_path / f"{name}.json"
        args = ["--json", str(out), "--report", str(out.with_suffix(".html")), "--quiet"]
        assert main(["audit", *audit_args(release), *args]) in (0, 1)
        found[name] = json.loads(out.read_text())["near_copies"]
    capsys.readouterr()
    named, clean = found["replicas"], found["clean"]
    blind = named["labels_blind_threshold"]
    assert named["threshold"] < blind
    assert sum(pair["similarity"] > blind for pair in named["pairs"]) < 5  # missed there
    assert named["limited_by"] == "non-members" and named["replicas"]["significant"]
    assert len(rendered & set(named["copied"])) >= 18
    assert named["non_members_copied"] == 0
    assert clean["count"] == 0 and not clean["replicas"]["significant"]
