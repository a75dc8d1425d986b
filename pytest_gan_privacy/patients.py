"""Patients: the unit of membership when the real images say whose they are.

A patient's slices are not independent: a threshold fitted on some of a patient's
slices and tested on the others flatters the numbers, and "which patients can be
identified?" is what a privacy officer asks. With groups (DICOM PatientID, NIfTI file,
--groups), the folds and the bootstrap take whole patients (metrics.py), a patient may
not be both used and not used, and the gate's numbers are per patient: each attack's
image scores of a patient are combined into one patient score (`PATIENT_SCORE`), then
the gate chooses and thresholds as it does for images (gate.best_per_fold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import AuditInputError, printable
from .privacy import patient_labels


def _top_mean(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def rule(scores: np.ndarray) -> np.ndarray:
        top = np.sort(scores, axis=0)[::-1][:k]
        return top.mean(axis=0)

    return rule


# How a patient's image scores become one score (per attack, over the patient's images).
PATIENT_SCORE_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max": lambda scores: scores.max(axis=0),
    "mean": lambda scores: scores.mean(axis=0),
    "top-3 mean": _top_mean(3),
}
# Chosen by measurement (benchmarks/medical.py --rules; README "Medical formats and
# patients"), the gate's patient AUC on the converted brainmri64 scenarios (patients of
# 4-8 slices) for max / mean / top-3 mean: vae-100 0.994 / 1.000 / 1.000, dcgan-100
# 0.792 / 0.816 / 0.711, copies 0.997 / 1.000 / 0.998, disjoint (no leak) 0.473 / 0.500
# / 0.565. The mean pools a weak signal spread over a patient's slices (a GAN that
# memorised a little leaks a little through each) and stays at chance without a leak;
# the max follows the one noisiest slice, and a top-k mean sits between them.
PATIENT_SCORE = "mean"


@dataclass
class Patients:
    """The patients of the candidates: the patient of each candidate, their opaque
    labels (privacy.patient_labels) and membership, in label order."""

    index: np.ndarray  # (C,) the patient of each candidate, 0 .. P-1
    labels: list[str]  # (P,) "patient N"
    membership: np.ndarray  # (P,) 1: used, 0: not used
    images: np.ndarray  # (P,) how many candidates each has

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_used(self) -> int:
        return int(self.membership.sum())

    @property
    def n_not_used(self) -> int:
        return int((self.membership == 0).sum())

    def label_of(self, candidate: int) -> str:
        return self.labels[int(self.index[candidate])]

    def combine(self, columns: np.ndarray, rule: str = PATIENT_SCORE) -> np.ndarray:
        """(C, A) image scores -> (P, A) patient scores by the named rule."""
        columns = np.asarray(columns, dtype=float)
        combine = PATIENT_SCORE_RULES[rule]
        return np.stack([combine(columns[self.index == p]) for p in range(len(self))])

    def any_of(self, flags: np.ndarray) -> np.ndarray:
        """(C,) bool -> (P,) bool: the patients with at least one flagged image."""
        out = np.zeros(len(self), bool)
        out[self.index[np.asarray(flags, bool)]] = True
        return out


def group_keys(groups: Sequence[str | None], hashes: Sequence[str]) -> list[str]:
    """Every image's patient; an image without one (a plain image in a mixed folder) is
    a patient of its own."""
    return [g if g is not None else f"image:{h}" for g, h in zip(groups, hashes, strict=True)]


def candidate_patients(
    groups: Sequence[str | None], hashes: Sequence[str], labels: np.ndarray
) -> Patients | None:
    """The candidates' patients, or None when no image has a group (membership is then
    per image, as it always was)."""
    if all(g is None for g in groups):
        return None
    keys = group_keys(groups, hashes)
    names = patient_labels(keys, hashes)
    order = sorted(names, key=lambda g: int(names[g].split()[-1]))
    position = {g: p for p, g in enumerate(order)}
    index = np.array([position[k] for k in keys])
    membership = np.zeros(len(order), int)
    membership[index] = np.asarray(labels, int)
    return Patients(
        index=index,
        labels=[names[g] for g in order],
        membership=membership,
        images=np.bincount(index, minlength=len(order)),
    )


def check_patients_apart(members, non_members) -> None:
    """A patient whose images are in both used and not_used is bad input: the model saw
    that patient, so the not_used images are no non-members. Names one file of each
    side per patient (never the patient's ID: it may be a medical record number)."""
    used = {}
    for path, g in zip(members.paths, members.groups, strict=True):
        if g is not None:
            used.setdefault(g, path)
    both, seen = [], set()
    for path, g in zip(non_members.paths, non_members.groups, strict=True):
        if g is not None and g in used and g not in seen:
            seen.add(g)
            both.append((g, used[g], path))
    if both:
        pairs = "\n  ".join(f"{printable(u)} and {printable(n)}" for _g, u, n in both[:10])
        more = f"\n  ... and {len(both) - 10} more" if len(both) > 10 else ""
        raise AuditInputError(
            f"{len(both)} patient(s) have images in both used and not_used (the same "
            "DICOM PatientID, NIfTI file or --groups group); a patient the model saw is "
            "no non-member. Move each patient's images to one folder, or fix the groups; "
            f"one file of each side:\n  {pairs}{more}"
        )
