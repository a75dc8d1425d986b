"""The audit: load, encode, attack, measure, gate.

`run_audit` is the one place where the steps meet; the gate itself is
`AuditResult.passed`: the leakage F1 of the gating attack against the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from . import __version__
from .attacks import AttackScores, nearest_neighbour_attack
from .cache import open_cache
from .encoders import Progress, build_encoder, encode_images, resolve_device
from .errors import AuditInputError
from .images import ImageSet, load_image_set
from .metrics import MembershipMetrics, check_fold_counts, membership_metrics
from .settings import AuditSettings

SHORT_HASH = 12  # hex digits of a candidate's SHA-256 in the report and JSON


@dataclass
class Candidates:
    """The real candidates, members (used, label 1) then non-members (not_used, 0),
    each group in content-hash order."""

    members: ImageSet
    non_members: ImageSet

    @property
    def labels(self) -> np.ndarray:
        return np.r_[np.ones(len(self.members), int), np.zeros(len(self.non_members), int)]

    @property
    def ids(self) -> list[str]:
        return [f"used/{i}" for i in self.members.ids] + [
            f"not_used/{i}" for i in self.non_members.ids
        ]

    @property
    def hashes(self) -> list[str]:
        return self.members.hashes + self.non_members.hashes

    def __len__(self) -> int:
        return len(self.members) + len(self.non_members)


@dataclass
class AttackResult:
    """One attack's scores and the metrics measured from them."""

    scores: AttackScores
    metrics: MembershipMetrics


@dataclass
class AuditResult:
    """Everything an audit measured; `passed` is the gate's verdict."""

    settings: AuditSettings
    generated: ImageSet
    candidates: Candidates
    attacks: dict[str, AttackResult]
    gating_attack: str
    device: str
    encoder: dict
    timings: dict[str, float]
    versions: dict[str, str] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    # what a reader must know to trust the numbers: skipped images, unbalanced classes...
    warnings: list[str] = field(default_factory=list)
    cache: dict | None = None  # the feature cache's folder and hits (None: off)

    @property
    def gate(self) -> MembershipMetrics:
        """The metrics of the attack the gate uses."""
        return self.attacks[self.gating_attack].metrics

    @property
    def f1(self) -> float:
        return self.gate.f1

    @property
    def passed(self) -> bool:
        """The gate: leakage F1 at or below the configured limit."""
        return self.gate.f1 <= self.settings.max_f1

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def summary(self) -> str:
        """One line: verdict, F1 with interval and chance, limit, AUC."""
        m = self.gate
        return (
            f"{self.verdict}: leakage F1 {m.f1:.3f} (95% CI {m.f1_ci[0]:.3f}-{m.f1_ci[1]:.3f}, "
            f"chance {m.chance_f1:.3f}) vs limit {self.settings.max_f1:.3f}; "
            f"AUC {m.auc:.3f}; {len(self.candidates)} candidates, "
            f"{len(self.generated)} generated"
        )

    def candidate_rows(self) -> list[dict]:
        """One row per candidate, in audit (content-hash) order: its short hash, label,
        the gate's score and out-of-fold call, every attack's score, and its nearest
        generated images (from the gate, or the first attack that keeps neighbours)."""
        gate = self.attacks[self.gating_attack]
        evidence = next(
            (a.scores for a in (gate, *self.attacks.values()) if a.scores.neighbour_indices.size),
            None,
        )
        generated_ids = self.generated.ids
        rows = []
        for i, (cid, sha, label) in enumerate(
            zip(self.candidates.ids, self.candidates.hashes, self.candidates.labels, strict=True)
        ):
            neighbours = []
            if evidence is not None:
                neighbours = [
                    {"id": generated_ids[j], "similarity": float(sim)}
                    for j, sim in zip(
                        evidence.neighbour_indices[i],
                        evidence.neighbour_similarities[i],
                        strict=True,
                    )
                ]
            rows.append(
                {
                    "id": cid,
                    "sha256": sha[:SHORT_HASH],
                    "label": "used" if label else "not_used",
                    "score": float(gate.scores.scores[i]),
                    "called_used": bool(gate.metrics.calls[i]),
                    "attack_scores": {
                        n: float(a.scores.scores[i]) for n, a in self.attacks.items()
                    },
                    "nearest_generated": neighbours,
                }
            )
        return rows

    def as_dict(self) -> dict:
        """The JSON result: the gate's numbers at the top level, then the details."""
        m = self.gate
        return {
            "generator": "pytest-gan-privacy",
            "created": self.created,
            "passed": self.passed,
            "verdict": self.verdict,
            "f1": m.f1,
            "f1_ci": list(m.f1_ci),
            "chance_f1": m.chance_f1,
            "max_f1": self.settings.max_f1,
            "margin": self.settings.max_f1 - m.f1,
            "accuracy": m.accuracy,
            "precision": m.precision,
            "recall": m.recall,
            "specificity": m.specificity,
            "auc": m.auc,
            "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr,
            "tpr_at_0_1pct_fpr": m.tpr_at_0_1pct_fpr,
            "confusion": m.confusion,
            "gating_attack": self.gating_attack,
            "threshold_policy": self.settings.threshold_policy,
            "n_generated": len(self.generated),
            "n_used": len(self.candidates.members),
            "n_not_used": len(self.candidates.non_members),
            "features": self.settings.features,
            "encoder": self.encoder,
            "device": self.device,
            "seed": self.settings.seed,
            "seconds": self.seconds,
            "timings": self.timings,
            "attacks": {
                name: {"description": a.scores.description, **a.metrics.as_dict()}
                for name, a in self.attacks.items()
            },
            "inputs": {
                role: {
                    "folder": str(s.folder),
                    "count": len(s),
                    "manifest_sha256": s.manifest_sha256(),
                }
                for role, s in (
                    ("generated", self.generated),
                    ("used", self.candidates.members),
                    ("not_used", self.candidates.non_members),
                )
            },
            "settings": self.settings.as_dict(),
            "versions": self.versions,
            "candidates": self.candidate_rows(),
            "warnings": self.warnings,
            "skipped_images": self.skipped_images(),
            "cache": self.cache,
        }

    def skipped_images(self) -> list[dict]:
        """Images left out as unreadable (skip_bad_images), with the reason."""
        return [
            {"role": s.role, "path": str(path), "reason": reason}
            for s in (self.generated, self.candidates.members, self.candidates.non_members)
            for path, reason in sorted(s.skipped.items(), key=lambda item: str(item[0]))
        ]


def versions() -> dict[str, str]:
    # timm's version from its metadata: importing timm costs 200 MB and seconds, and
    # pixel features never need it
    from importlib.metadata import version

    return {"pytest_gan_privacy": __version__, "torch": torch.__version__, "timm": version("timm")}


def load_candidates(settings: AuditSettings) -> Candidates:
    """The used and not_used images, checked for images that are in both."""
    members = load_image_set(settings.used, "used", settings.skip_bad_images)
    non_members = load_image_set(settings.not_used, "not_used", settings.skip_bad_images)
    shared = sorted(set(members.hashes) & set(non_members.hashes))
    if shared:
        where_m = dict(zip(members.hashes, members.paths, strict=False))
        where_n = dict(zip(non_members.hashes, non_members.paths, strict=False))
        pairs = "\n  ".join(f"{where_m[h]} = {where_n[h]}" for h in shared[:10])
        raise AuditInputError(
            f"{len(shared)} image(s) are in both used and not_used (same content); an image "
            f"cannot be both a member and a non-member. Remove one copy of each:\n  {pairs}"
        )
    check_fold_counts(len(members), len(non_members), settings.folds)
    return Candidates(members, non_members)


def run_audit(settings: AuditSettings, progress: Progress | None = None) -> AuditResult:
    """Run the whole audit described by `settings` and return its result.

    Raises AuditInputError for bad input; writes nothing (see report.write_outputs).
    """
    progress = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - since, 3)
        return now

    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    t = time.perf_counter()
    generated = load_image_set(settings.generated, "generated", settings.skip_bad_images)
    candidates = load_candidates(settings)
    t = lap("load", t)

    cache = open_cache(settings)
    encoder = build_encoder(settings)
    encoder.fit(generated, device, progress)
    t = lap("fit_encoder", t)

    def encode(images: ImageSet) -> torch.Tensor:
        return encode_images(
            images, encoder, device, settings.batch_size, settings.workers, progress, cache
        )

    generated_features = encode(generated)
    candidate_features = torch.cat([encode(candidates.members), encode(candidates.non_members)])
    t = lap("encode", t)

    labels = candidates.labels  # after encoding: unreadable candidates may have been skipped
    scores = nearest_neighbour_attack(candidate_features, generated_features, device)
    attacks = {
        scores.name: AttackResult(
            scores,
            membership_metrics(
                scores.scores,
                labels,
                settings.threshold_policy,
                settings.folds,
                settings.seed,
                settings.bootstrap,
            ),
        )
    }
    lap("attack", t)
    timings["total"] = round(time.perf_counter() - started, 3)
    result = AuditResult(
        settings=settings,
        generated=generated,
        candidates=candidates,
        attacks=attacks,
        gating_attack=scores.name,
        device=str(device),
        encoder=encoder.describe(),
        timings=timings,
        versions=versions(),
        cache=None if cache is None else cache.stats(),
    )
    result.warnings = audit_warnings(result) + ([] if cache is None else cache.warnings)
    return result


# A larger class more than this many times the smaller one makes F1 mean little:
# chance F1 follows the member fraction, and the default limit assumes a balance.
MAX_CLASS_RATIO = 1.5


def audit_warnings(result: AuditResult) -> list[str]:
    """What a reader must know before trusting the verdict."""
    out = []
    members, non_members = result.candidates.members, result.candidates.non_members
    n_m, n_n = len(members), len(non_members)
    if max(n_m, n_n) > MAX_CLASS_RATIO * min(n_m, n_n):
        out.append(
            f"unbalanced candidates: {n_m} used vs {n_n} not_used. F1 means little here: a "
            f"labels-blind guess gets {result.gate.chance_f1:.3f} against the limit "
            f"{result.settings.max_f1:.3f}, which assumes a balanced set. Judge by the AUC "
            "and the F1 over its chance level, or balance the used and not_used folders"
        )
    skipped = result.skipped_images()
    if skipped:
        by_role = ", ".join(
            f"{role} {sum(s['role'] == role for s in skipped)}"
            for role in ("generated", "used", "not_used")
            if any(s["role"] == role for s in skipped)
        )
        out.append(
            f"{len(skipped)} unreadable image(s) were skipped ({by_role}) and are not in "
            "the numbers; see skipped_images"
        )
    generated = set(result.generated.hashes)
    copies = [
        f"{role}/{image_id}"
        for role, images in (("used", members), ("not_used", non_members))
        for image_id, h in zip(images.ids, images.hashes, strict=True)
        if h in generated
    ]
    if copies:
        shown = ", ".join(copies[:10]) + (" ..." if len(copies) > 10 else "")
        out.append(
            f"{len(copies)} real image(s) appear byte for byte among the generated images, "
            f"the worst leak: {shown}"
        )
    return out
