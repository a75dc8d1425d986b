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
from .attacks import AttackScores, feature_space_attacks
from .cache import open_cache
from .encoders import (
    NearCopyEncoder,
    PatchEncoder,
    PixelEncoder,
    Progress,
    build_learned_encoder,
    encode_images,
    resolve_device,
)
from .errors import AuditInputError
from .images import ImageSet, load_image_set, load_pixels
from .metrics import MembershipMetrics, check_fold_counts, membership_metrics
from .nearcopies import (
    NearCopies,
    PowerCheck,
    find_near_copies,
    pick_canaries,
    power_check,
    real_pair_threshold,
    robust_scan,
)
from .settings import AuditSettings

SHORT_HASH = 12  # hex digits of a candidate's SHA-256 in the report and JSON
MAX_LISTED = 1000  # near-copy pairs listed in the JSON (all are counted)


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


@dataclass(repr=False)
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
    near_copies: NearCopies | None = None
    power: PowerCheck | None = None

    @property
    def gate(self) -> MembershipMetrics:
        """The metrics of the attack the gate uses."""
        return self.attacks[self.gating_attack].metrics

    @property
    def gate_choices(self) -> list[str]:
        """The attack the gate chose in each fold (on the other folds)."""
        names = [name for name in self.attacks if name != self.gating_attack]
        return [names[i] for i in self.gate.chosen] if self.gate.chosen else []

    @property
    def f1(self) -> float:
        return self.gate.f1

    @property
    def conclusive(self) -> bool:
        """The power check found (nearly) all planted copies: a PASS means something."""
        return self.power is None or self.power.fraction >= POWER_NEEDED

    @property
    def failures(self) -> list[str]:
        """Why the gate fails (empty: it passes)."""
        out = []
        if self.gate.f1 > self.settings.max_f1:
            out.append(
                f"leakage F1 {self.gate.f1:.3f} is over the limit {self.settings.max_f1:.3f}"
            )
        if self.settings.fail_on_near_copies and self.near_copies:
            out.append(f"{len(self.near_copies)} generated image(s) are near-copies of candidates")
        if self.settings.fail_inconclusive and not self.conclusive:
            out.append(
                f"the power check found only {self.power.found} of {self.power.planted} "
                "planted copies: a PASS would be inconclusive"
            )
        return out

    @property
    def passed(self) -> bool:
        """The gate: leakage F1 at or below the limit (and, where asked, no near-copies
        and a conclusive power check)."""
        return not self.failures

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "FAIL"
        return "PASS" if self.conclusive else "PASS (inconclusive)"

    def __repr__(self) -> str:
        return f"AuditResult({self.summary()})"

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def summary(self) -> str:
        """One line: verdict, F1 with interval and chance, limit, AUC."""
        m = self.gate
        return (
            f"{self.verdict}: leakage F1 {m.f1:.3f} (95% CI {m.f1_ci[0]:.3f}-{m.f1_ci[1]:.3f}, "
            f"chance {m.chance_f1:.3f}) vs limit {self.settings.max_f1:.3f}; "
            f"AUC {m.auc:.3f}; {len(self.near_copies or [])} near-copies; power check "
            f"{self.power.found if self.power else 0}/{self.power.planted if self.power else 0}"
            f"; {len(self.candidates)} candidates, {len(self.generated)} generated"
        )

    def near_copies_dict(self) -> dict | None:
        """Near-copies for the JSON: the threshold, counts and the pairs (most similar
        first, at most MAX_LISTED)."""
        if self.near_copies is None:
            return None
        nc = self.near_copies
        labels, ids, gen_ids = self.candidates.labels, self.candidates.ids, self.generated.ids
        copied = set(nc.candidate_index)
        return {
            "threshold": nc.threshold,
            "count": len(nc),
            "members_copied": sum(int(labels[c]) for c in copied),
            "non_members_copied": sum(1 - int(labels[c]) for c in copied),
            "pairs": [
                {
                    "generated": gen_ids[g],
                    "candidate": ids[c],
                    "label": "used" if labels[c] else "not_used",
                    "similarity": sim,
                }
                for g, c, sim in list(
                    zip(nc.generated_index, nc.candidate_index, nc.similarity, strict=True)
                )[:MAX_LISTED]
            ],
        }

    def power_dict(self) -> dict | None:
        if self.power is None:
            return None
        return {
            "planted": self.power.planted,
            "found": self.power.found,
            "fraction": self.power.fraction,
            "needed": POWER_NEEDED,
            "conclusive": self.conclusive,
        }

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
            "gate_choices": self.gate_choices,
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
            "failures": self.failures,
            "near_copies": self.near_copies_dict(),
            "power_check": self.power_dict(),
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


GATE = "best per fold"
WORKING_SIZE = 64  # pixels: the size the pixel, local-structure and near-copy spaces use
POWER_NEEDED = 0.9  # fraction of planted copies the detector must find for a conclusive PASS


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
    reference = (
        None
        if settings.reference is None
        else load_image_set(settings.reference, "reference", settings.skip_bad_images)
    )
    t = lap("load", t)

    cache = open_cache(settings)
    learned = build_learned_encoder(settings, device, cache)
    if learned is not None:
        learned.fit(generated, device, progress)
        t = lap("fit_encoder", t)

    def encode(images: ImageSet, encoder) -> torch.Tensor:
        return encode_images(
            images, encoder, device, settings.batch_size, settings.workers, progress, cache
        )

    # Feature spaces: pixels (the seed's baseline), local structure, and the learned one.
    spaces = [PixelEncoder(WORKING_SIZE), PatchEncoder(WORKING_SIZE)]
    spaces += [learned] if learned is not None else []
    scored: list[AttackScores] = []
    for encoder in spaces:
        gen = encode(generated, encoder)
        cand = torch.cat(
            [encode(candidates.members, encoder), encode(candidates.non_members, encoder)]
        )
        ref = None if reference is None else encode(reference, encoder)
        t = lap(f"encode {encoder.name}", t)
        scored += feature_space_attacks(
            encoder.name,
            cand,
            gen,
            device,
            reference=ref,
            # the pixel baseline as the seed ran it: nearest neighbour, per-image Pearson
            only_nearest=encoder.name == "pixels",
            centre=encoder.name != "pixels",
        )
        # an encoder's own attacks, e.g. the MAE's reconstruction error
        scored += encoder.attacks([candidates.members, candidates.non_members], device)
        t = lap(f"attacks {encoder.name}", t)
        del gen, cand, ref  # one space's features in memory at a time (N x D floats each)

    # Near-copies: the generated side is encoded (and cached) like any feature; the
    # candidates' side needs their pixels, to shift and turn them.
    near_copy_side = encode(generated, NearCopyEncoder(WORKING_SIZE))
    candidate_pixels = torch.cat(
        [
            load_pixels(s, WORKING_SIZE, settings.batch_size, settings.workers)
            for s in (candidates.members, candidates.non_members)
        ]
    )
    t = lap("encode near-copy", t)
    scan = robust_scan(
        near_copy_side,
        candidate_pixels,
        device,
        progress=lambda done, total: progress("near-copy scan (candidates)", done, total),
    )
    threshold = real_pair_threshold(candidate_pixels, device)
    near_copies = find_near_copies(scan, threshold)
    scored.append(
        AttackScores(
            name="near-copy",
            description="best local-structure similarity to a generated image over shifts of "
            "up to 3 px and turns of 3 degrees",
            scores=scan.candidate_best.double().numpy(),
            neighbour_indices=scan.candidate_top_index.numpy(),
            neighbour_similarities=scan.candidate_top.double().numpy(),
        )
    )
    t = lap("attacks near-copy", t)
    # members come first among the candidates: a member's index is its candidate index
    canaries = pick_canaries(candidates.members.hashes, settings.canaries, settings.seed)
    power = power_check(candidate_pixels, canaries, threshold, settings.seed, device)
    t = lap("power check", t)

    labels = candidates.labels

    def measure(scores: np.ndarray) -> MembershipMetrics:
        return membership_metrics(
            scores,
            labels,
            settings.threshold_policy,
            settings.folds,
            settings.seed,
            settings.bootstrap,
        )

    attacks = {a.name: AttackResult(a, measure(a.scores)) for a in scored}
    # The gate: per fold, the attack that separated best on the other folds.
    gate_metrics = measure(np.column_stack([a.scores for a in scored]))
    attacks[GATE] = AttackResult(
        AttackScores(
            name=GATE,
            description="per fold, the attack with the best AUC on the other folds",
            scores=gate_metrics.scores,
            # the evidence shown per candidate: its most similar generated images (the
            # near-copy scan's, which allows for moves)
            neighbour_indices=scan.candidate_top_index.numpy(),
            neighbour_similarities=scan.candidate_top.double().numpy(),
        ),
        gate_metrics,
    )
    lap("metrics and gate", t)
    timings["total"] = round(time.perf_counter() - started, 3)
    result = AuditResult(
        settings=settings,
        generated=generated,
        candidates=candidates,
        attacks=attacks,
        gating_attack=GATE,
        device=str(device),
        encoder={e.name: e.describe() for e in spaces},
        timings=timings,
        versions=versions(),
        cache=None if cache is None else cache.stats(),
        near_copies=near_copies,
        power=power,
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
