"""The audit as named steps: load -> orient -> fit -> encode -> attack -> scan ->
threshold -> measure -> decide.

`run_audit(settings)` runs them and returns an `AuditResult` (result.py): plain data
about what was measured, with the gate's decision. The steps live in their modules:
loading (load, orient), scoring (fit, encode, attack, scan), nearcopies (threshold,
power check), metrics and exposure (measure), gate (decide); results and report turn
the result into the JSON and the HTML report (write).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from . import __version__
from .attacks import AttackScores, near_copy_attack
from .baseline import Baseline, Comparison, compare, current_numbers, read_baseline
from .cache import TensorCache, cached, open_cache
from .caveats import audit_warnings
from .distributed import join, local_device
from .exposure import Exposure, exposure
from .features import Encoding
from .files import cache_folder, check_cache_folder
from .gate import GATE, GATE_DESCRIPTION, Evidence, best_per_fold, decide
from .loading import Release, load_release
from .metrics import MembershipMetrics, membership_metrics, stratified_folds
from .nearcopies import (
    CANARY_LEVELS,
    NearCopies,
    NearCopyThreshold,
    PowerCheck,
    detector_key,
    find_near_copies,
    near_copy_threshold,
    pick_canaries,
    power_check,
)
from .patients import Patients, candidate_patients, group_keys
from .replicas import replica_test
from .result import AttackResult, AuditResult, Candidates, PatientLevel
from .runtime import (
    Progress,
    Stopwatch,
    cpu_threads,
    no_progress,
    resolve_device,
    return_freed_memory,
)
from .scoring import Scores, score_release
from .settings import AuditSettings, NearCopySearch, check_input_paths
from .shortlist import chosen_search, indexed_reference, search_identity


def run_audit(settings: AuditSettings, progress: Progress | None = None) -> AuditResult | None:
    """Run the whole audit described by `settings` and return its result (None on a
    torchrun rank other than 0, which writes nothing: distributed.py).

    Raises AuditInputError for bad input, the paths' before any work (inputs that are
    missing, the same or nested; a cache folder among them); writes nothing but cache
    entries (see report.write_outputs). Random choices draw from generators seeded by
    `settings.seed`; the caller's global random state is left alone.
    """
    check_before_work(settings)
    with cpu_threads():  # as many as this process may use (runtime.cpu_budget)
        return _audit(settings, progress or no_progress)


def check_before_work(settings: AuditSettings) -> None:
    """The inputs exist and make sense, and the cache folder lies apart from them."""
    check_input_paths(settings)
    folder = cache_folder(settings)
    if folder is not None:
        check_cache_folder(folder, settings.inputs())


def _audit(settings: AuditSettings, progress: Progress) -> AuditResult | None:
    baseline = None if settings.baseline is None else read_baseline(settings.baseline)
    clock = Stopwatch()
    device = local_device(resolve_device(settings.device))
    world = join(device)  # one process, or torchrun's (distributed.py)
    cache = open_cache(settings)
    encoding = Encoding(device, settings.batch_size, settings.workers, progress, cache)
    release = load_release(settings)  # load and orient
    clock.lap("load")
    scores = score_release(settings, release, encoding, world, clock)  # fit ... scan
    if scores is None:  # a torchrun rank other than 0: its share is done, it writes nothing
        return None
    candidates = release.candidates
    patients = candidate_patients(candidates.groups, candidates.hashes, candidates.labels)
    near_copies, power = threshold_and_power(settings, release, scores, encoding, patients)
    clock.lap("power check")
    measured = measure(settings, candidates, scores, near_copies, patients)
    clock.lap("metrics and gate")
    compared = against(baseline, candidates, measured, near_copies)
    evidence = Evidence(
        settings, measured.gate, candidates.labels, near_copies, measured.exposure, power, compared
    )
    result = AuditResult(
        settings=settings,
        generated=release.generated,
        candidates=release.candidates,
        attacks=measured.attacks,
        gating_attack=GATE,
        decision=decide(evidence),
        device=str(device),
        encoder={e.name: e.describe() for e in scores.spaces},
        timings=clock.total(),
        versions=versions(),
        cache=None if cache is None else cache.stats(),
        near_copies=near_copies,
        power=power,
        exposure=measured.exposure,
        patient_level=measured.patient_level,
        orientation=release.orientation,
        world_size=world.size,
        baseline=compared,
    )
    result.warnings = audit_warnings(result) + ([] if cache is None else cache.warnings)
    return result


def against(
    baseline: Baseline | None, candidates: Candidates, measured: Measured, near_copies: NearCopies
) -> Comparison | None:
    """This audit's key numbers against the baseline's (None: no baseline)."""
    if baseline is None:
        return None
    manifests = {
        "used": candidates.members.manifest_sha256(),
        "not_used": candidates.non_members.manifest_sha256(),
    }
    numbers = current_numbers(measured.gate, measured.exposure, near_copies)
    return compare(baseline, manifests, numbers)


def versions() -> dict[str, str]:
    # timm's version from its metadata: importing timm costs 200 MB and seconds, and
    # pixel features never need it
    from importlib.metadata import version

    return {"pytest_gan_privacy": __version__, "torch": torch.__version__, "timm": version("timm")}


# --- threshold: near-copies and the power check ----------------------------------------


def threshold_and_power(
    settings: AuditSettings,
    release: Release,
    scores: Scores,
    encoding: Encoding,
    patients: Patients | None,
) -> tuple[NearCopies, PowerCheck]:
    """The near-copy threshold (labels-blind, cached; lowered to the non-members' best
    match where the members hold replicas), the near-copies it finds in the scan, and
    the power check: planted copies of members, found at the labels-blind threshold."""
    candidates, pixels, device = release.candidates, release.pixels, encoding.device
    # with patients, pairs of one patient's slices do not set the near-copy reference
    keys = None if patients is None else group_keys(candidates.groups, candidates.hashes)
    threshold = _threshold(settings, candidates, pixels, keys, encoding.device, encoding.cache)
    best = scores.scan.candidate_best.numpy()
    replicas = replica_test(best, candidates.labels, None if patients is None else patients.index)
    threshold = replace(threshold, replicas=replicas)
    near_copies = find_near_copies(scores.scan, threshold)
    # members come first among the candidates: a member's index is its candidate index
    canaries = pick_canaries(
        candidates.members.hashes,
        settings.canaries,
        settings.seed,
        None if keys is None else keys[: len(candidates.members)],
    )
    return_freed_memory()  # the threshold's blocks, before the power check's
    power = power_check(pixels, canaries, threshold, settings.seed, device)
    return near_copies, power


def _threshold(
    settings: AuditSettings,
    candidates: Candidates,
    pixels: torch.Tensor,
    keys: list[str] | None,
    device: torch.device,
    cache: TensorCache | None,
) -> NearCopyThreshold:
    # the copy level's copies use other seeds than the power check's canaries
    level_seed = settings.seed + len(CANARY_LEVELS)
    orientation = candidates.members.orientation
    # the real-pair reference compares candidates x candidates: through the index too
    # when that is as many pairs as the scan would search one for
    search = chosen_search(settings.near_copy_search, len(pixels), len(pixels))
    reference = indexed_reference if search is NearCopySearch.INDEX else None
    key = detector_key(
        device, [candidates.hashes], orientation, level_seed, keys, search_identity(search)
    )
    return cached(
        cache,
        "near-copy-thresholds",
        key,
        lambda: near_copy_threshold(pixels, level_seed, device, keys, reference),
        NearCopyThreshold.from_tensors,
    )


# --- measure -------------------------------------------------------------------------


@dataclass
class Measured:
    """Every attack's metrics, then the gate's (per patient with patients), and exposure."""

    attacks: dict[str, AttackResult]  # every attack, then the gate (per image)
    gate: MembershipMetrics  # the gate's metrics in the membership unit
    exposure: Exposure
    patient_level: PatientLevel | None


def measure(
    settings: AuditSettings,
    candidates: Candidates,
    scores: Scores,
    near_copies: NearCopies,
    patients: Patients | None,
) -> Measured:
    """Every attack alone, then the gate's choice among them; with `patients` (the
    candidates'), folds and intervals by patient, and the gate's numbers and exposure
    per patient."""
    labels = candidates.labels
    by = None if patients is None else patients.index
    policy, folds, seed, rounds = (
        settings.threshold_policy,
        settings.folds,
        settings.seed,
        settings.bootstrap,
    )
    attacks = {
        a.name: AttackResult(
            a, membership_metrics(a.scores, labels, policy, folds, seed, rounds, by)
        )
        for a in scores.attacks
    }
    columns = np.column_stack([a.scores for a in scores.attacks])
    gate = best_per_fold(columns, labels, policy, folds, seed, rounds, by)
    attacks[GATE] = AttackResult(_gate_scores(gate, scores), gate)
    copied = np.zeros(len(labels), bool)
    copied[near_copies.copied] = True
    if patients is None:
        folded = stratified_folds(labels, folds, seed)
        exposed = exposure(columns, labels, folded, gate.chosen, copied)
        return Measured(attacks, gate, exposed, None)
    return _per_patient(settings, patients, columns, copied, attacks)


def _per_patient(
    settings: AuditSettings,
    patients: Patients,
    columns: np.ndarray,
    copied: np.ndarray,
    attacks: dict[str, AttackResult],
) -> Measured:
    """The gate and exposure on the patients' scores (patients.PATIENT_SCORE)."""
    per_patient, units = patients.combine(columns), patients.membership
    s = settings
    gate = best_per_fold(per_patient, units, s.threshold_policy, s.folds, s.seed, s.bootstrap)
    folded = stratified_folds(units, s.folds, s.seed)
    exposed = exposure(per_patient, units, folded, gate.chosen, patients.any_of(copied))
    return Measured(attacks, gate, exposed, PatientLevel(patients, gate))


def _gate_scores(gate: MembershipMetrics, scores: Scores) -> AttackScores:
    """The gate as an attack: its out-of-fold scores, with the evidence shown per
    candidate, its most similar generated images (the near-copy scan's, which allows
    for moves)."""
    evidence = near_copy_attack(scores.scan)
    return AttackScores(
        name=GATE,
        description=GATE_DESCRIPTION,
        scores=gate.scores,
        neighbour_indices=evidence.neighbour_indices,
        neighbour_similarities=evidence.neighbour_similarities,
    )
