"""The audit as one readable pipeline: load -> fit -> encode -> attack -> measure -> decide.

`run_audit(settings)` runs it and returns an `AuditResult`: plain data about what was
measured. Each step lives in its own module: images (load), encoders and features
(fit, encode), attacks and nearcopies (attack), metrics (measure), gate (decide);
results and report turn the result into the JSON and the HTML report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from . import __version__
from .attacks import AttackScores, near_copy_attack, space_attacks
from .cache import open_cache
from .encoders import WORKING_SIZE, Encoder, feature_spaces
from .errors import AuditInputError
from .exposure import Exposure, exposure
from .features import encode_images
from .gate import GATE, GATE_DESCRIPTION, Decision, best_per_fold, decide
from .images import ImageSet, load_image_set, load_pixels
from .metrics import MembershipMetrics, check_fold_counts, membership_metrics, stratified_folds
from .nearcopies import (
    CANARY_LEVELS,
    NearCopies,
    NearCopyEncoder,
    PowerCheck,
    find_near_copies,
    near_copy_threshold,
    pick_canaries,
    power_check,
    robust_scan,
)
from .runtime import Progress, cpu_threads, no_progress, resolve_device
from .settings import AuditSettings


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
    """Everything an audit measured. The verdict is the gate's (gate.decide), and the
    JSON is results.result_json's."""

    settings: AuditSettings
    generated: ImageSet
    candidates: Candidates
    attacks: dict[str, AttackResult]  # every attack, then the gate
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
    exposure: Exposure | None = None

    @property
    def gate(self) -> MembershipMetrics:
        """The metrics of the attack the gate uses."""
        return self.attacks[self.gating_attack].metrics

    @property
    def gate_choices(self) -> list[str]:
        """The attack the gate chose in each fold (on the other folds)."""
        names = [name for name in self.attacks if name != self.gating_attack]
        return [names[i] for i in self.gate.chosen]

    @property
    def f1(self) -> float:
        return self.gate.f1

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    @property
    def decision(self) -> Decision:
        return decide(self)

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

    def as_dict(self) -> dict:
        """The JSON result (results.result_json)."""
        from .results import result_json

        return result_json(self)

    def __repr__(self) -> str:
        from .results import summary_line

        return f"AuditResult({summary_line(self)})"


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


class _Stopwatch:
    """Seconds per stage, for the result's timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self.last, 3)
        self.last = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        return self.timings


def run_audit(settings: AuditSettings, progress: Progress | None = None) -> AuditResult:
    """Run the whole audit described by `settings` and return its result.

    Raises AuditInputError for bad input; writes nothing but cache entries (see
    report.write_outputs). Random choices draw from generators seeded by
    `settings.seed`; the caller's global random state is left alone.
    """
    with cpu_threads():  # as many as this process may use (runtime.cpu_budget)
        return _run(settings, progress or no_progress)


def _run(settings: AuditSettings, progress: Progress) -> AuditResult:
    clock = _Stopwatch()
    device = resolve_device(settings.device)

    # load
    generated = load_image_set(settings.generated, "generated", settings.skip_bad_images)
    candidates = load_candidates(settings)
    reference = None
    if settings.reference is not None:
        reference = load_image_set(settings.reference, "reference", settings.skip_bad_images)
    clock.lap("load")

    # fit: the learned space learns from the generated images (the others need nothing)
    cache = open_cache(settings)
    spaces = feature_spaces(settings, device, cache)
    for encoder in spaces:
        encoder.fit(generated, device, progress)
    clock.lap("fit_encoder")

    def encode(images: ImageSet, encoder: Encoder) -> torch.Tensor:
        return encode_images(
            images, encoder, device, settings.batch_size, settings.workers, progress, cache
        )

    decoded: dict[int, torch.Tensor] = {}

    def candidate_pixels(size: int) -> torch.Tensor:
        """The candidates' pixels at a size, decoded once per size."""
        if size not in decoded:
            decoded[size] = torch.cat(
                [
                    load_pixels(s, size, settings.batch_size, settings.workers)
                    for s in (candidates.members, candidates.non_members)
                ]
            )
        return decoded[size]

    # encode and attack, one feature space at a time (N x D floats each in memory)
    scored: list[AttackScores] = []
    for encoder in spaces:
        gen = encode(generated, encoder)
        cand = torch.cat(
            [encode(candidates.members, encoder), encode(candidates.non_members, encoder)]
        )
        ref = None if reference is None else encode(reference, encoder)
        clock.lap(f"encode {encoder.name}")
        scored += space_attacks(
            encoder, cand, gen, candidate_pixels, device, settings.seed, settings.batch_size, ref
        )
        clock.lap(f"attacks {encoder.name}")
        del gen, cand, ref

    # near-copies: the generated side is encoded (and cached) like any feature; the
    # candidates' side needs their pixels, to shift and turn them
    near_copy_side = encode(generated, NearCopyEncoder())
    pixels = candidate_pixels(WORKING_SIZE)
    clock.lap("encode near-copy")
    scan = robust_scan(
        near_copy_side,
        pixels,
        device,
        progress=lambda done, total: progress("near-copy scan (candidates)", done, total),
    )
    # the copy level's copies use other seeds than the power check's canaries
    threshold = near_copy_threshold(pixels, settings.seed + len(CANARY_LEVELS), device)
    near_copies = find_near_copies(scan, threshold)
    scored.append(near_copy_attack(scan))
    clock.lap("attacks near-copy")
    # members come first among the candidates: a member's index is its candidate index
    canaries = pick_canaries(candidates.members.hashes, settings.canaries, settings.seed)
    power = power_check(pixels, canaries, threshold, settings.seed, device)
    clock.lap("power check")

    # measure: every attack alone, then the gate's choice among them
    labels = candidates.labels
    policy, folds, seed, rounds = (
        settings.threshold_policy,
        settings.folds,
        settings.seed,
        settings.bootstrap,
    )
    attacks = {
        a.name: AttackResult(a, membership_metrics(a.scores, labels, policy, folds, seed, rounds))
        for a in scored
    }
    columns = np.column_stack([a.scores for a in scored])
    gate = best_per_fold(columns, labels, policy, folds, seed, rounds)
    copied = np.zeros(len(labels), bool)
    copied[near_copies.copied] = True
    exposed = exposure(columns, labels, stratified_folds(labels, folds, seed), gate.chosen, copied)
    # the evidence shown per candidate: its most similar generated images (the near-copy
    # scan's, which allows for moves)
    evidence = near_copy_attack(scan)
    attacks[GATE] = AttackResult(
        AttackScores(
            GATE,
            GATE_DESCRIPTION,
            gate.scores,
            evidence.neighbour_indices,
            evidence.neighbour_similarities,
        ),
        gate,
    )
    clock.lap("metrics and gate")

    # decide: the verdict is the gate's, computed from the result (gate.decide)
    result = AuditResult(
        settings=settings,
        generated=generated,
        candidates=candidates,
        attacks=attacks,
        gating_attack=GATE,
        device=str(device),
        encoder={e.name: e.describe() for e in spaces},
        timings=clock.total(),
        versions=versions(),
        cache=None if cache is None else cache.stats(),
        near_copies=near_copies,
        power=power,
        exposure=exposed,
    )
    result.warnings = audit_warnings(result) + ([] if cache is None else cache.warnings)
    return result


# A larger class more than this many times the smaller one makes F1 mean little:
# chance F1 follows the member fraction, and the default limit assumes a balance.
MAX_CLASS_RATIO = 1.5


def audit_warnings(result: AuditResult) -> list[str]:
    """What a reader must know before trusting the verdict."""
    from .results import skipped_images

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
    skipped = skipped_images(result)
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
