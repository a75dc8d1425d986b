"""The audit's result as data: what was measured and what the gate decided.

Plain records, filled by the pipeline (audit.py) and read by the gate, the JSON and
summary (results.py), the report and the pytest plugin. Nothing here computes: the
decision is the gate's (gate.decide), made once by the pipeline and stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .attacks import AttackScores
from .baseline import Comparison
from .exposure import Exposure
from .images import ImageSet
from .metrics import MembershipMetrics
from .nearcopies import NearCopies, PowerCheck
from .orientation import Orientation
from .patients import PATIENT_SCORE, Patients
from .settings import AuditSettings


@dataclass
class Candidates:
    """The real candidates, members (used, label 1) then non-members (not_used, 0),
    each group in content order."""

    members: ImageSet
    non_members: ImageSet

    @property
    def labels(self) -> np.ndarray:
        """1 for each member, then 0 for each non-member."""
        ones, zeros = np.ones(len(self.members), int), np.zeros(len(self.non_members), int)
        return np.concatenate([ones, zeros])

    @property
    def ids(self) -> list[str]:
        return [f"used/{i}" for i in self.members.ids] + [
            f"not_used/{i}" for i in self.non_members.ids
        ]

    @property
    def hashes(self) -> list[str]:
        return self.members.hashes + self.non_members.hashes

    @property
    def groups(self) -> list[str | None]:
        """The patient of each candidate (None: an image without one)."""
        return self.members.groups + self.non_members.groups

    def __len__(self) -> int:
        return len(self.members) + len(self.non_members)


@dataclass
class PatientLevel:
    """With patients: who they are (opaque labels) and the gate's numbers per patient."""

    patients: Patients
    gate: MembershipMetrics  # the gate's metrics on the patient scores
    rule: str = PATIENT_SCORE  # how a patient's image scores were combined


@dataclass
class AttackResult:
    """One attack's scores and the metrics measured from them."""

    scores: AttackScores
    metrics: MembershipMetrics


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every reason it fails (empty: it passes)."""

    failures: list[str]
    conclusive: bool  # the power check found its planted copies: a PASS means something

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        """FAIL, PASS, or PASS (inconclusive)."""
        if not self.passed:
            return "FAIL"
        return "PASS" if self.conclusive else "PASS (inconclusive)"


@dataclass(repr=False)
class AuditResult:
    """Everything an audit measured, and the gate's decision. The JSON is
    results.result_json's."""

    settings: AuditSettings
    generated: ImageSet
    candidates: Candidates
    attacks: dict[str, AttackResult]  # every attack, then the gate
    gating_attack: str
    decision: Decision
    device: str
    encoder: dict[str, dict[str, Any]]  # each feature space's description
    timings: dict[str, float]
    versions: dict[str, str] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    # what a reader must know to trust the numbers: skipped images, unbalanced classes...
    warnings: list[str] = field(default_factory=list)
    cache: dict[str, Any] | None = None  # the feature cache's folder and hits (None: off)
    near_copies: NearCopies | None = None
    power: PowerCheck | None = None
    exposure: Exposure | None = None  # per patient with patients
    patient_level: PatientLevel | None = None  # None: membership per image
    orientation: Orientation | None = None
    world_size: int = 1  # processes under torchrun (distributed.py)
    baseline: Comparison | None = None  # against a previous audit (--baseline)

    @property
    def membership_unit(self) -> str:
        """ "patient" when the candidates have patients (groups), else "image"."""
        return "image" if self.patient_level is None else "patient"

    @property
    def gate(self) -> MembershipMetrics:
        """The gate's metrics, in the membership unit: per patient with patients."""
        if self.patient_level is not None:
            return self.patient_level.gate
        return self.image_gate

    @property
    def image_gate(self) -> MembershipMetrics:
        """The metrics of the attack the gate uses, per image."""
        return self.attacks[self.gating_attack].metrics

    @property
    def gate_choices(self) -> list[str]:
        """The attack the gate chose in each fold (on the other folds)."""
        names = [name for name in self.attacks if name != self.gating_attack]
        return [names[i] for i in self.gate.chosen]

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def verdict(self) -> str:
        """FAIL, PASS, or PASS (inconclusive)."""
        return self.decision.verdict

    @property
    def failures(self) -> list[str]:
        """Why the gate fails (empty: it passes)."""
        return self.decision.failures

    @property
    def conclusive(self) -> bool:
        return self.decision.conclusive

    @property
    def f1(self) -> float:
        """The leakage F1, cross-fitted, in the membership unit."""
        return self.gate.f1

    @property
    def f1_ci(self) -> tuple[float, float] | None:
        """Its 95 % bootstrap interval (None: --bootstrap 0)."""
        return self.gate.f1_ci

    @property
    def chance_f1(self) -> float:
        """The F1 a labels-blind guess would get."""
        return self.gate.chance_f1

    @property
    def auc(self) -> float:
        return self.gate.auc

    @property
    def tpr_at_1pct_fpr(self) -> float | None:
        return self.gate.tpr_at_1pct_fpr

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def attack_seconds(self, name: str) -> float:
        """What an attack costs: the stages of the feature space it needs (training,
        encoding, the pass its scores come from), which that space's attacks share;
        the gate needs every space."""
        space = self.attacks[name].scores.space
        spaces = {space} if space else {a.scores.space for a in self.attacks.values()} - {""}
        stages = [f"{stage} {s}" for s in sorted(spaces) for stage in ("fit", "encode", "attacks")]
        return round(sum(self.timings.get(stage, 0.0) for stage in stages), 3)

    def __repr__(self) -> str:
        return (
            f"AuditResult(verdict={self.verdict!r}, f1={self.f1:.3f}, auc={self.auc:.3f}, "
            f"candidates={len(self.candidates)}, generated={len(self.generated)})"
        )
