"""The audit as one readable pipeline: load -> fit -> encode -> attack -> measure -> decide.

`run_audit(settings)` runs it and returns an `AuditResult`: plain data about what was
measured. Each step lives in its own module: images (load), encoders and features
(fit, encode), attacks and nearcopies (attack), metrics (measure), gate (decide);
results and report turn the result into the JSON and the HTML report.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from . import __version__
from .attacks import AttackScores, near_copy_attack, space_attacks
from .cache import TensorCache, cache_key, cached, open_cache
from .distributed import SINGLE, World, join, leave, local_device
from .encoders import WORKING_SIZE, Encoder, feature_spaces
from .errors import AuditInputError, printable
from .exposure import Exposure, exposure
from .features import FeatureStream, encode_images, shared_features
from .files import cache_folder, check_cache_folder
from .gate import GATE, GATE_DESCRIPTION, Decision, best_per_fold, decide
from .groups import ImageGroups, groups_of
from .images import ImageSet, load_image_set, load_pixels
from .medical import DecodeOptions
from .metrics import (
    MembershipMetrics,
    chance_over_limit,
    check_fold_counts,
    check_group_counts,
    membership_metrics,
    stratified_folds,
)
from .nearcopies import (
    CANARY_LEVELS,
    NearCopies,
    NearCopyEncoder,
    NearCopyThreshold,
    PowerCheck,
    RobustScan,
    detector_identity,
    find_near_copies,
    near_copy_threshold,
    pick_canaries,
    power_check,
    robust_scan,
)
from .orientation import (
    SAMPLE_GENERATED,
    Orientation,
    check_orientation,
    orient,
    orientation_warning,
    sample_positions,
)
from .patients import PATIENT_SCORE, Patients, candidate_patients, check_patients_apart, group_keys
from .runtime import (
    Progress,
    cpu_budget,
    cpu_threads,
    device_identity,
    no_progress,
    resolve_device,
)
from .settings import AuditSettings, check_input_paths
from .similarity import TensorRows


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
    gate: MembershipMetrics  # gate.best_per_fold on the patient scores
    rule: str = PATIENT_SCORE  # how a patient's image scores were combined


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
    exposure: Exposure | None = None  # per patient with patients
    patient_level: PatientLevel | None = None  # None: membership per image
    orientation: Orientation | None = None
    world_size: int = 1  # processes under torchrun (distributed.py)

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


def load_candidates(settings: AuditSettings, groups: ImageGroups | None = None) -> Candidates:
    """The used and not_used images, checked for images (and patients) that are in both.
    `groups`: the groups file, when the caller read it for more folders (predict's)."""
    options = DecodeOptions.from_settings(settings)
    if groups is None:
        folders = {"used": settings.used, "not_used": settings.not_used}
        groups = groups_of(settings.groups, folders)
    members = load_image_set(settings.used, "used", settings.skip_bad_images, options, groups)
    non_members = load_image_set(
        settings.not_used, "not_used", settings.skip_bad_images, options, groups
    )
    shared = sorted(set(members.hashes) & set(non_members.hashes))
    if shared:
        where_m = dict(zip(members.hashes, members.paths, strict=False))
        where_n = dict(zip(non_members.hashes, non_members.paths, strict=False))
        pairs = "\n  ".join(
            f"{printable(where_m[h])} = {printable(where_n[h])}" for h in shared[:10]
        )
        raise AuditInputError(
            f"{len(shared)} image(s) are in both used and not_used (same content); an image "
            f"cannot be both a member and a non-member. Remove one copy of each:\n  {pairs}"
        )
    check_patients_apart(members, non_members)
    check_fold_counts(len(members), len(non_members), settings.folds)
    candidates = Candidates(members, non_members)
    if any(g is not None for g in candidates.groups):  # folds by patient: enough of them
        keys = np.array(group_keys(candidates.groups, candidates.hashes))
        check_group_counts(candidates.labels, keys, settings.folds)
    return candidates


def unique_candidate_pixels(
    candidates: Candidates, settings: AuditSettings
) -> tuple[Candidates, torch.Tensor]:
    """The candidates decoded at the working size, (C, 1, size, size), without the
    images whose pixels equal another candidate's there (a slice saved twice as PNG
    with other compression, or as PNG and BMP): counted twice, they would weigh twice
    in every number, and as "two distinct real candidates" that are identical they set
    the near-copy threshold at 1, so that no copy, planted or real, is ever found.
    Copies within a folder are left out and named (ImageSet.duplicates); the same
    pixels in used and not_used stop the audit. Images that cannot be decoded (with
    skip_bad_images) are dropped here, so that every later step sees the same sets."""
    sets, parts, digests = [], [], []
    for images in (candidates.members, candidates.non_members):
        pix = load_pixels(images, WORKING_SIZE, settings.batch_size, settings.workers)
        if any(p in images.skipped for p in images.paths):
            total = len(images)
            pix = pix[images.drop_skipped()]
            images.check_not_empty(total)
        digest = [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in pix]
        keep, first = [], {}
        ids = images.ids
        for i, d in enumerate(digest):
            if d in first:
                images.duplicates.append((ids[i], ids[first[d]]))
            else:
                first[d] = i
                keep.append(i)
        if len(keep) < len(images):
            images, pix = images.subset(keep), pix[keep]
        sets.append(images)
        parts.append(pix)
        digests.append({d: ids[i] for d, i in first.items()})
    shared = sorted(set(digests[0]) & set(digests[1]))
    if shared:
        pairs = "\n  ".join(
            f"used/{printable(digests[0][d])} = not_used/{printable(digests[1][d])}"
            for d in shared[:10]
        )
        raise AuditInputError(
            f"{len(shared)} image(s) in used and not_used have the same pixels (other files, "
            "the same image); an image cannot be both a member and a non-member. Remove one "
            f"of each:\n  {pairs}"
        )
    check_fold_counts(len(sets[0]), len(sets[1]), settings.folds)
    return Candidates(*sets), torch.cat(parts)


def check_no_non_member_generated(
    generated: ImageSet, candidates: Candidates, pixels: torch.Tensor
) -> None:
    """Stop when non-members appear byte for byte among the generated images: a model
    that never saw them cannot have made them, so the generated folder holds real
    images (copied in, or a link into the real folders), and with every candidate
    among the "generated" ones no attack can tell members apart: the gate would pass.
    Blank images (all pixels equal) are left alone: two encoders may write one the same."""
    made = set(generated.hashes)
    n_members = len(candidates.members)
    ids = candidates.non_members.ids
    found = [
        ids[i]
        for i, h in enumerate(candidates.non_members.hashes)
        if h in made and float(pixels[n_members + i].std()) > 0
    ]
    if found:
        shown = ", ".join(f"not_used/{printable(i)}" for i in found[:10])
        more = " ..." if len(found) > 10 else ""
        raise AuditInputError(
            f"{len(found)} not_used image(s) appear byte for byte among the generated images "
            f"({shown}{more}): a model that never saw them cannot have made them, so the "
            f"generated folder {generated.folder} holds real images (copied in, or a link into "
            "the real folders). Give --generated a folder of generated images only"
        )


def load_reference(settings: AuditSettings, candidates: Candidates) -> ImageSet | None:
    """The reference images (None: none given), which must share no image with the
    candidates: the calibrated attacks would compare a candidate with itself."""
    if settings.reference is None:
        return None
    reference = load_image_set(
        settings.reference,
        "reference",
        settings.skip_bad_images,
        DecodeOptions.from_settings(settings),
    )
    where = {
        h: f"{role}/{i}"
        for role, images in (("used", candidates.members), ("not_used", candidates.non_members))
        for i, h in zip(images.ids, images.hashes, strict=True)
    }
    shared = [
        (i, where[h]) for i, h in zip(reference.ids, reference.hashes, strict=True) if h in where
    ]
    if shared:
        pairs = "\n  ".join(f"reference/{printable(r)} = {printable(c)}" for r, c in shared[:10])
        raise AuditInputError(
            f"{len(shared)} reference image(s) are also candidates (same content); the "
            "reference must hold real images that are neither used nor not_used. Remove "
            f"them from the reference folder {settings.reference}:\n  {pairs}"
        )
    return reference


def seconds_of(rows: object) -> float:
    """Seconds a streamed generated side spent decoding and encoding (0: in memory)."""
    return getattr(rows, "seconds", 0.0)


class _Stopwatch:
    """Seconds per stage, for the result's timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self.last, 3)
        self.last = now

    def move(self, seconds: float, source: str, target: str) -> None:
        """Count `seconds` of the stage `source` as the stage `target`'s (a streamed
        encoding runs inside the attacks that read it)."""
        self.timings[source] = round(self.timings[source] - seconds, 3)
        self.timings[target] = round(self.timings[target] + seconds, 3)

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        return self.timings


def run_audit(settings: AuditSettings, progress: Progress | None = None) -> AuditResult | None:
    """Run the whole audit described by `settings` and return its result (None on a
    torchrun rank other than 0, which writes nothing: distributed.py).

    Raises AuditInputError for bad input, the paths' before any work (inputs that are
    missing, the same or nested; a cache folder among them); writes nothing but cache
    entries (see report.write_outputs). Random choices draw from generators seeded by
    `settings.seed`; the caller's global random state is left alone.
    """
    check_input_paths(settings)
    folder = cache_folder(settings)
    if folder is not None:
        check_cache_folder(folder, settings.inputs())
    with cpu_threads():  # as many as this process may use (runtime.cpu_budget)
        return _run(settings, progress or no_progress)


@dataclass
class PoolScores:
    """What the attacks made of a pool of real candidates, labels-blind."""

    attacks: list[AttackScores]  # every feature space's attacks, then near-copy
    scan: RobustScan  # the near-copy scan: the near-copies and the evidence shown
    spaces: list[Encoder]  # the feature spaces, fitted


def score_candidates(
    settings: AuditSettings,
    generated: ImageSet,
    pools: list[ImageSet],
    pixels: torch.Tensor,
    reference: ImageSet | None,
    device: torch.device,
    cache: TensorCache | None,
    progress: Progress,
    clock: _Stopwatch,
    world: World = SINGLE,
) -> PoolScores | None:
    """fit -> encode -> attack: every attack's scores of the candidates of `pools`, in
    that order (`pixels`: theirs at the working size). No label is used, so the audit
    (used, not_used) and predict (development and unlabelled images) share it.

    Under torchrun (`world`, distributed.py) the ranks train the MAE together and share
    the generated side's decoding and encoding; rank 0 gets the features and scores,
    the others return None."""
    # fit: the learned space learns from the generated images (the others need nothing)
    spaces = feature_spaces(settings, device, cache)
    for encoder in spaces:
        encoder.fit(generated, device, progress)
    clock.lap("fit_encoder")

    def encode(images: ImageSet, encoder: Encoder) -> torch.Tensor:
        return encode_images(
            images, encoder, device, settings.batch_size, settings.workers, progress, cache
        )

    near_copy_encoder = NearCopyEncoder()
    gathered: dict[str, torch.Tensor | None] = {}
    if world.distributed:  # every rank encodes its share of the generated images
        for encoder in [*spaces, near_copy_encoder]:
            gathered[encoder.name] = shared_features(
                world,
                generated,
                encoder,
                device,
                settings.batch_size,
                settings.workers,
                progress,
                cache,
            )
        clock.lap("encode generated (distributed)")
        # that was the last collective: every rank leaves the process group now (a
        # process that exits with it alive may abort in its threads' teardown)
        leave()
        if not world.main:
            return None
        # rank 0 goes on alone: it takes its machine's CPUs (the other ranks are done),
        # which also makes its float32 sums those of a single process (a matrix
        # multiply's last bit depends on its number of threads)
        torch.set_num_threads(cpu_budget(alone=True))

    def stream(images: ImageSet, encoder: Encoder) -> FeatureStream | TensorRows:
        """The generated side, streamed: its features are never all in memory (under
        torchrun, rank 0 holds the rows the ranks gathered)."""
        if encoder.name in gathered:
            return TensorRows(gathered.pop(encoder.name))
        return FeatureStream(
            images, encoder, device, settings.batch_size, settings.workers, progress, cache
        )

    decoded: dict[int, torch.Tensor] = {WORKING_SIZE: pixels}

    def candidate_pixels(size: int) -> torch.Tensor:
        """The candidates' pixels at a size, decoded once per size."""
        if size not in decoded:
            decoded[size] = torch.cat(
                [load_pixels(s, size, settings.batch_size, settings.workers) for s in pools]
            )
        return decoded[size]

    # encode and attack, one feature space at a time: the candidates' features in
    # memory, the generated ones streamed through the attacks (read once per space)
    scored: list[AttackScores] = []
    for encoder in spaces:
        cand = torch.cat([encode(images, encoder) for images in pools])
        ref = None if reference is None else encode(reference, encoder)
        clock.lap(f"encode {encoder.name}")
        gen = stream(generated, encoder)
        scored += space_attacks(
            encoder, cand, gen, candidate_pixels, device, settings.seed, settings.batch_size, ref
        )
        clock.lap(f"attacks {encoder.name}")
        clock.move(seconds_of(gen), f"attacks {encoder.name}", f"encode {encoder.name}")
        del gen, cand, ref

    # near-copies: the generated side is encoded (and cached) like any feature; the
    # candidates' side needs their pixels, to shift and turn them. The scan (generated x
    # candidates x 147 transforms) is cached as a whole: a warm run skips it.
    key = detector_key(device, [generated.hashes, *(p.hashes for p in pools)], pools[0])
    clock.lap("encode near-copy")
    near_copy_side = None

    def scan_them() -> RobustScan:
        nonlocal near_copy_side
        near_copy_side = stream(generated, near_copy_encoder)
        return robust_scan(
            near_copy_side,
            candidate_pixels(WORKING_SIZE),
            device,
            progress=lambda done, total: progress("near-copy scan (generated)", done, total),
        )

    scan = cached(cache, "near-copy-scans", key, scan_them, lambda t: RobustScan(**t))
    scored.append(near_copy_attack(scan))
    clock.lap("attacks near-copy")
    clock.move(seconds_of(near_copy_side), "attacks near-copy", "encode near-copy")
    return PoolScores(scored, scan, spaces)


def detector_key(device: torch.device, hash_lists: list[list[str]], candidates: ImageSet, *more):
    """The cache key of a near-copy scan or threshold: the images' hashes in order, how
    the candidates are turned, the detector's settings, the device and the versions."""
    digests = [hashlib.sha256("\n".join(h).encode()).hexdigest() for h in hash_lists]
    return cache_key(
        "near-copy",
        detector_identity(device),
        *device_identity(device),
        __version__,
        torch.__version__,
        digests,
        candidates.orientation,
        *more,
    )


def _run(settings: AuditSettings, progress: Progress) -> AuditResult | None:
    clock = _Stopwatch()
    device = local_device(resolve_device(settings.device))
    world = join(device)  # one process, or torchrun's (distributed.py)

    # load
    generated = load_image_set(
        settings.generated,
        "generated",
        settings.skip_bad_images,
        DecodeOptions.from_settings(settings),
    )
    candidates = load_candidates(settings)
    reference = load_reference(settings, candidates)
    # the candidates' pixels at the working size (the near-copy scan's), decoded now: a
    # copy with other bytes but the same pixels is a duplicate too
    candidates, pixels = unique_candidate_pixels(candidates, settings)
    check_no_non_member_generated(generated, candidates, pixels)
    # the orientation check: the candidates are turned, for every attack, the way that
    # matches the generated images best (orientation.py)
    sample = generated.subset(sample_positions(len(generated), SAMPLE_GENERATED))
    oriented = check_orientation(
        pixels, load_pixels(sample, WORKING_SIZE, settings.batch_size, settings.workers)
    )
    if oriented.turned:
        for images in (candidates.members, candidates.non_members):
            images.orientation = oriented.index
        pixels = orient(pixels, oriented.index)
    clock.lap("load")

    cache = open_cache(settings)
    pools = [candidates.members, candidates.non_members]
    pool = score_candidates(
        settings, generated, pools, pixels, reference, device, cache, progress, clock, world
    )
    if pool is None:  # a torchrun rank other than 0: its share is done, it writes nothing
        return None
    scored, scan, spaces = pool.attacks, pool.scan, pool.spaces
    labels = candidates.labels
    patients = candidate_patients(candidates.groups, candidates.hashes, labels)
    # with patients, pairs of one patient's slices do not set the near-copy reference
    keys = None if patients is None else group_keys(candidates.groups, candidates.hashes)
    # the copy level's copies use other seeds than the power check's canaries
    level_seed = settings.seed + len(CANARY_LEVELS)
    key = detector_key(device, [candidates.hashes], candidates.members, level_seed, keys)
    threshold = cached(
        cache,
        "near-copy-thresholds",
        key,
        lambda: near_copy_threshold(pixels, level_seed, device, keys),
        NearCopyThreshold.from_tensors,
    )
    near_copies = find_near_copies(scan, threshold)
    # members come first among the candidates: a member's index is its candidate index
    canaries = pick_canaries(
        candidates.members.hashes,
        settings.canaries,
        settings.seed,
        None if keys is None else keys[: len(candidates.members)],
    )
    power = power_check(pixels, canaries, threshold, settings.seed, device)
    clock.lap("power check")

    # measure: every attack alone, then the gate's choice among them; with patients,
    # folds and intervals by patient (images), and the gate's numbers per patient
    policy, folds, seed, rounds = (
        settings.threshold_policy,
        settings.folds,
        settings.seed,
        settings.bootstrap,
    )
    by = None if patients is None else patients.index
    attacks = {
        a.name: AttackResult(
            a, membership_metrics(a.scores, labels, policy, folds, seed, rounds, by)
        )
        for a in scored
    }
    columns = np.column_stack([a.scores for a in scored])
    gate = best_per_fold(columns, labels, policy, folds, seed, rounds, by)
    copied = np.zeros(len(labels), bool)
    copied[near_copies.copied] = True
    patient_level = None
    if patients is None:
        folded = stratified_folds(labels, folds, seed)
        exposed = exposure(columns, labels, folded, gate.chosen, copied)
    else:
        per_patient = patients.combine(columns)
        units = patients.membership
        patient_gate = best_per_fold(per_patient, units, policy, folds, seed, rounds)
        folded = stratified_folds(units, folds, seed)
        exposed = exposure(per_patient, units, folded, patient_gate.chosen, patients.any_of(copied))
        patient_level = PatientLevel(patients, patient_gate)
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
        patient_level=patient_level,
        orientation=oriented,
        world_size=world.size,
    )
    result.warnings = audit_warnings(result) + ([] if cache is None else cache.warnings)
    return result


# A larger class more than this many times the smaller one makes F1 mean little:
# chance F1 follows the member fraction, and the default limit assumes a balance.
MAX_CLASS_RATIO = 1.5
# Fewer candidates per class than this and the F1 means little: a labels-blind guess
# that calls half of 20 + 20 candidates used reaches F1 0.6 about one time in six
# (hypergeometric), of 100 + 100 one time in 280.
MIN_CANDIDATES_PER_CLASS = 20
# With patients, warn when a labels-blind guess passes the F1 limit more often than this
# (metrics.chance_over_limit): 32 + 32 patients give 4 %; a label shuffle of the
# converted `disjoint` (64 patients, the gate's choice of attack included) failed 9 %
MAX_LUCK = 0.01
DUPLICATES_SHOWN = 10


def audit_warnings(result: AuditResult) -> list[str]:
    """What a reader must know before trusting the verdict."""
    from .results import skipped_images

    out = []
    if result.orientation is not None and result.orientation.turned:
        out.append(orientation_warning(result.orientation))
    members, non_members = result.candidates.members, result.candidates.non_members
    n_m, n_n = len(members), len(non_members)
    if min(n_m, n_n) < MIN_CANDIDATES_PER_CLASS:
        out.append(
            f"too few candidates to mean much: {n_m} used and {n_n} not_used (fewer than "
            f"{MIN_CANDIDATES_PER_CLASS} per class). By chance alone the F1 can land far from "
            "its true value, so neither a PASS nor a FAIL is evidence; use at least 100 of each"
        )
    if result.patient_level is not None:
        p = result.patient_level.patients
        luck = chance_over_limit(p.n_used, p.n_not_used, result.settings.max_f1)
        if luck > MAX_LUCK or min(p.n_used, p.n_not_used) < MIN_CANDIDATES_PER_CLASS:
            out.append(
                f"too few patients to mean much: {p.n_used} used and {p.n_not_used} not_used. "
                f"The gate's numbers are per patient, and a labels-blind guess gets an F1 over "
                f"the limit {result.settings.max_f1:.3f} {luck:.1%} of the time with this few: "
                "a FAIL on the F1 alone may be chance. Judge by the interval and the AUC, or "
                "audit more patients (about 100 per class)"
            )
    if len(result.generated) < n_m + n_n:
        out.append(
            f"fewer generated images ({len(result.generated)}) than candidates ({n_m + n_n}): "
            "most candidates have no generated image to be like, so a PASS means little. "
            "Audit a sample of generated images at least as large as the candidate set"
        )
    for images in (result.generated, members, non_members):
        if images.duplicates:
            pairs = ", ".join(
                f"{images.role}/{printable(copy)} = {images.role}/{printable(kept)}"
                for copy, kept in images.duplicates[:DUPLICATES_SHOWN]
            )
            more = " ..." if len(images.duplicates) > DUPLICATES_SHOWN else ""
            out.append(
                f"{len(images.duplicates)} {images.role} image(s) are copies of another image "
                f"in that folder (the same file content or the same pixels) and were counted "
                f"once: {pairs}{more}. "
                "Remove the copies"
            )
    if max(n_m, n_n) > MAX_CLASS_RATIO * min(n_m, n_n):
        out.append(
            f"unbalanced candidates: {n_m} used vs {n_n} not_used. F1 means little here: a "
            f"labels-blind guess gets {result.gate.chance_f1:.3f} against the limit "
            f"{result.settings.max_f1:.3f}, which assumes a balanced set. Judge by the AUC "
            "and the F1 over its chance level, or balance the used and not_used folders"
        )
    power = result.power
    if power is not None and not result.conclusive and result.near_copies is not None:
        out.append(_weak_power(result))
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
        f"{role}/{printable(image_id)}"
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


def _weak_power(result: AuditResult) -> str:
    """Why the power check missed its planted copies, and what to do."""
    power, t = result.power, result.near_copies.threshold
    found = f"the power check found only {power.found} of {power.planted} planted copies"
    if t.limited_by == "real pairs" and t.pair is not None:
        a, b = (printable(result.candidates.ids[i]) for i in t.pair)
        return (
            f"{found}: the near-copy threshold, {t.value:.4f}, is set by real images as alike "
            f"as copies ({a} is that close to {b} and to one more candidate), so copies are "
            "hard to tell from real images. If some are copies of others (the same image "
            "re-encoded, neighbouring slices of one series), remove them or give the patients "
            "with --groups, whose pairs are then left out"
        )
    return (
        f"{found}: a standard copy of these images (shifted, turned, re-exposed) often scores "
        f"under the near-copy threshold, {t.value:.4f}; a PASS means little for copies made "
        "this way"
    )
