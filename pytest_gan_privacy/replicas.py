"""Replicas: members that a generated image matches better than any non-member is matched.

The near-copy threshold (nearcopies.py) is labels-blind and set at a standard copy's
level: a copy moved, turned and re-exposed. A diffusion model copies by re-rendering:
its replicas keep the anatomy but not the fine texture, and score under that level
(on brainmri64/ddpm-100 the labels-blind threshold names 18 of the 69 members in its
memorised.txt). The non-members are the null that the audit holds anyway: real images
of the same population that the generator never saw. The best match any of them gets
is how close a generated image comes to a real image by chance, here; a member above
it is closer than chance takes anyone.

One member above every non-member is chance half the time (with as many of each). So
the test: k members (patients, when known) above every non-member; if membership
made no difference, every arrangement of the candidates' best matches would be as
likely, and the chance that the top k are all members is
m (m - 1) ... (m - k + 1) / ((m + n) (m + n - 1) ... (m + n - k + 1)), an exact
permutation p-value. Below REPLICA_ALPHA, the threshold drops to the non-members'
best match for this audit's listing (nearcopies.NearCopyThreshold.applied): the
members above it are named, and no non-member can be (each is at or under it).
With as many members as non-members it takes 10 members above them all (one is chance
half the time). On brainmri64/ddpm-100 it names 68 of the 69 members in memorised.txt;
on the clean scenarios no k comes near significance (benchmarks/exposure.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The permutation p-value under which the members above are replicas. The gate's checks
# share one budget of false FAILs (at most 1 % of label shuffles, benchmarks/exposure.py):
# at 0.01 the replicas alone spent it on dcgan-100 and disjoint (1.5 % and 1.4 % of
# shuffles failed), at 0.001 they take a tenth.
REPLICA_ALPHA = 0.001


@dataclass(frozen=True)
class ReplicaTest:
    """How many members (patients) are above the best match of every non-member."""

    level: float  # the largest best-match similarity of any non-member
    above: int  # members (member patients) above it
    members: int  # members (member patients) in all
    non_members: int
    unit: str  # "image" or "patient"

    @property
    def p_value(self) -> float:
        return all_members_on_top(self.above, self.members, self.non_members)

    @property
    def expected_by_chance(self) -> float:
        """Members above every non-member if membership made no difference: each is
        the highest of itself and the non-members with chance 1 / (n + 1). Of the
        members named, about this many may be chance."""
        return self.members / (self.non_members + 1)

    @property
    def significant(self) -> bool:
        return self.above > 0 and self.p_value < REPLICA_ALPHA


def all_members_on_top(k: int, members: int, non_members: int) -> float:
    """The chance that the k highest of members + non-members shuffled scores are all
    members (1 for k = 0)."""
    if k > members:
        return 0.0
    log_p = sum(math.log(members - i) - math.log(members + non_members - i) for i in range(k))
    return math.exp(log_p)


def replica_test(
    best: np.ndarray, labels: np.ndarray, patient_index: np.ndarray | None = None
) -> ReplicaTest | None:
    """The test on the candidates' best matches among the generated images (the near-copy
    scan's), per patient (its best image) when `patient_index` says whose each is.
    None without both members and non-members."""
    best, labels = np.asarray(best, float), np.asarray(labels, int)
    if not labels.any() or labels.all():
        return None
    level = float(best[labels == 0].max())
    unit = "image"
    if patient_index is not None:  # a patient's best image; its label is its images'
        patients = int(patient_index.max()) + 1
        per_patient = np.full(patients, -np.inf)
        np.maximum.at(per_patient, patient_index, best)
        membership = np.zeros(patients, int)
        membership[patient_index] = labels
        best, labels, unit = per_patient, membership, "patient"
    members = labels == 1
    return ReplicaTest(
        level=level,
        above=int((best[members] > level).sum()),
        members=int(members.sum()),
        non_members=int((~members).sum()),
        unit=unit,
    )
