"""The load phase that the audit and predict share: every role's images found, hashed
and checked, before any feature is learned.

1. load: the generated images, the real pools (used, not_used, and predict's unlabelled
   candidates), the reference; a groups file gives the real images their patients;
2. refuse images in two roles (`refuse_shared`), by content and then by pixels: an image
   cannot be both a member and a non-member, a reference image must be neither, and an
   image whose label is known cannot be predicted;
3. decode the real pools at the working size without copies: a slice saved twice (other
   bytes, the same pixels) would weigh twice in every number and, as two "distinct" real
   candidates that are identical, set the near-copy threshold at 1;
4. orient: the real images are turned, for every attack, the way that matches the
   generated images best (orientation.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .encoders import WORKING_SIZE
from .errors import AuditInputError, printable
from .groups import groups_of
from .images import ImageSet, load_image_set, load_pixels
from .medical import DecodeOptions
from .metrics import check_fold_counts, check_group_counts
from .orientation import SAMPLE_GENERATED, Orientation, check_orientation, orient, sample_positions
from .patients import check_patients_apart, group_keys
from .result import Candidates
from .settings import AuditSettings

UNLABELLED = "candidates"  # predict's unlabelled images: their role, in messages and ids
SHOWN = 10  # pairs named in a message

_REFERENCE = "the reference holds real images that are neither candidates nor training images"
_KNOWN = (
    "an image of the development set has a known label: it cannot be predicted, and it "
    "would weigh twice"
)
# why an image may not be in both roles, by the pair of roles
WHY_APART = {
    ("used", "not_used"): "an image cannot be both a member and a non-member",
    ("used", "reference"): _REFERENCE,
    ("not_used", "reference"): _REFERENCE,
    (UNLABELLED, "reference"): _REFERENCE,
    ("used", UNLABELLED): _KNOWN,
    ("not_used", UNLABELLED): _KNOWN,
}


@dataclass
class Release:
    """The images of an audit, loaded and checked: the generated ones, the real pools
    scored together (members, non-members, then predict's unlabelled candidates), the
    reference, and the pools' pixels at the working size, oriented, in pool order."""

    generated: ImageSet
    pools: list[ImageSet]
    reference: ImageSet | None
    pixels: torch.Tensor
    orientation: Orientation

    @property
    def candidates(self) -> Candidates:
        """The labelled candidates: members (used) and non-members (not_used)."""
        return Candidates(self.pools[0], self.pools[1])


def load_release(settings: AuditSettings, unlabelled: Path | None = None) -> Release:
    """Load, refuse overlaps, decode the real images without copies and orient them.
    `unlabelled`: predict's candidates folder, a third pool. AuditInputError for bad input."""
    options = DecodeOptions.from_settings(settings)
    generated = load_image_set(settings.generated, "generated", settings.skip_bad_images, options)
    pools, reference = load_real(settings, unlabelled)
    pools, pixels = decoded_without_copies(pools, settings)
    check_candidates(Candidates(pools[0], pools[1]), settings.folds)
    check_no_non_member_generated(generated, pools[1], pixels[len(pools[0]) :])
    orientation = orient_pools(generated, pools, pixels, settings)
    if orientation.turned:
        pixels = orient(pixels, orientation.index)
    return Release(generated, pools, reference, pixels, orientation)


def load_real(
    settings: AuditSettings, unlabelled: Path | None = None
) -> tuple[list[ImageSet], ImageSet | None]:
    """The real pools (used, not_used, and `unlabelled` when given) with their patients,
    and the reference, refusing any image that is in two of them by content, a patient
    on both sides, and too few candidates for the folds."""
    options = DecodeOptions.from_settings(settings)
    real = {"used": settings.used, "not_used": settings.not_used}
    if unlabelled is not None:
        real[UNLABELLED] = unlabelled
    groups = groups_of(settings.groups, real)
    skip = settings.skip_bad_images
    pools = [load_image_set(folder, role, skip, options, groups) for role, folder in real.items()]
    reference = None
    if settings.reference is not None:
        reference = load_image_set(settings.reference, "reference", skip, options)
    named = pools + ([] if reference is None else [reference])
    refuse_shared([(s, s.hashes) for s in named], "the same file content")
    check_candidates(Candidates(pools[0], pools[1]), settings.folds)
    return pools, reference


def load_candidates(settings: AuditSettings) -> Candidates:
    """The used and not_used images, checked (load_real), not yet decoded."""
    pools, _ = load_real(settings)
    return Candidates(pools[0], pools[1])


def refuse_shared(sets: Sequence[tuple[ImageSet, Sequence[str]]], how: str) -> None:
    """Stop when an image is in two roles: (set, a key per image: its content hash or a
    digest of its pixels) for each role. Names the first pairs and why they must be apart."""
    first: dict[str, tuple[str, str]] = {}  # key -> (role, image id)
    clashes: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for images, keys in sets:
        for image_id, key in zip(images.ids, keys, strict=True):
            seen = first.setdefault(key, (images.role, image_id))
            if seen[0] != images.role:
                pair = (f"{seen[0]}/{seen[1]}", f"{images.role}/{image_id}")
                clashes.setdefault((seen[0], images.role), []).append(pair)
    for (a, b), pairs in clashes.items():
        shown = "\n  ".join(f"{printable(x)} = {printable(y)}" for x, y in pairs[:SHOWN])
        raise AuditInputError(
            f"{len(pairs)} image(s) are in both {a} and {b} ({how}): "
            f"{WHY_APART.get((a, b), 'each role needs images of its own')}. Remove one copy "
            f"of each:\n  {shown}"
        )


def check_candidates(candidates: Candidates, folds: int) -> None:
    """No patient on both sides, and enough candidates (and patients) for the folds."""
    check_patients_apart(candidates.members, candidates.non_members)
    check_fold_counts(len(candidates.members), len(candidates.non_members), folds)
    if any(g is not None for g in candidates.groups):  # folds by patient: enough of them
        keys = np.array(group_keys(candidates.groups, candidates.hashes))
        check_group_counts(candidates.labels, keys, folds)


def decoded_without_copies(
    pools: list[ImageSet], settings: AuditSettings
) -> tuple[list[ImageSet], torch.Tensor]:
    """The pools decoded at the working size, (N, 1, size, size) in pool order, without
    the images whose pixels equal another's of the same pool (named in `duplicates`),
    refusing the same pixels in two pools. Images that cannot be decoded (with
    skip_bad_images) are dropped here, so that every later step sees the same sets."""
    kept, parts = [], []
    for images in pools:
        pix = load_pixels(images, WORKING_SIZE, settings.batch_size, settings.workers)
        if any(p in images.skipped for p in images.paths):
            total = len(images)
            pix = pix[images.drop_skipped()]
            images.check_not_empty(total)
        digests = pixel_digests(pix)
        keep, first = [], {}
        ids = images.ids
        for i, digest in enumerate(digests):
            if digest in first:
                images.duplicates.append((ids[i], ids[first[digest]]))
            else:
                first[digest] = i
                keep.append(i)
        if len(keep) < len(images):
            images, pix = images.subset(keep), pix[keep]
        kept.append(images)
        parts.append(pix)
    refuse_shared(
        [(s, pixel_digests(p)) for s, p in zip(kept, parts, strict=True)],
        "other files that have the same pixels",
    )
    return kept, torch.cat(parts)


def pixel_digests(pixels: torch.Tensor) -> list[str]:
    return [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in pixels]


def check_no_non_member_generated(
    generated: ImageSet, non_members: ImageSet, pixels: torch.Tensor
) -> None:
    """Stop when non-members appear byte for byte among the generated images: a model
    that never saw them cannot have made them, so the generated folder holds real
    images (copied in, or a link into the real folders), and with every candidate
    among the "generated" ones no attack can tell members apart: the gate would pass.
    Blank images (all pixels equal) are left alone: two encoders may write one the same.
    `pixels`: the non-members' at the working size."""
    made = set(generated.hashes)
    ids = non_members.ids
    found = [
        ids[i] for i, h in enumerate(non_members.hashes) if h in made and float(pixels[i].std()) > 0
    ]
    if found:
        shown = ", ".join(f"not_used/{printable(i)}" for i in found[:SHOWN])
        more = " ..." if len(found) > SHOWN else ""
        raise AuditInputError(
            f"{len(found)} not_used image(s) appear byte for byte among the generated images "
            f"({shown}{more}): a model that never saw them cannot have made them, so the "
            f"generated folder {generated.folder} holds real images (copied in, or a link into "
            "the real folders). Give --generated a folder of generated images only"
        )


def orient_pools(
    generated: ImageSet, pools: list[ImageSet], pixels: torch.Tensor, settings: AuditSettings
) -> Orientation:
    """The orientation check on every real image (labels-blind); each pool is turned
    the way it chose (`ImageSet.orientation`), for every attack."""
    sample = generated.subset(sample_positions(len(generated), SAMPLE_GENERATED))
    oriented = check_orientation(
        pixels, load_pixels(sample, WORKING_SIZE, settings.batch_size, settings.workers)
    )
    if oriented.turned:
        for images in pools:
            images.orientation = oriented.index
    return oriented
