"""The audit's result as data: the JSON schema (one function) and the summary lines.

`result_json(result)` is the JSON result and what the report is drawn from, so the
two carry the same numbers; `summary_line(result)` is the one line the command line,
the pytest terminal summary and the failure message all show.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from .files import GENERATOR
from .gate import POWER_NEEDED
from .images import ImageSet
from .nearcopies import ANGLES, CANARY_LEVELS, DECIDING_LEVEL, MAX_SHIFT
from .replicas import REPLICA_ALPHA, ReplicaTest
from .result import AuditResult

SHORT_HASH = 12  # hex digits of a candidate's SHA-256 in the report and JSON
MAX_LISTED = 1000  # near-copy pairs listed in the JSON (all are counted)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def interval_text(ci: tuple[float, float] | list[float] | None) -> str:
    """'95% CI 0.531-0.612', or that there is none (bootstrap off)."""
    return "no CI: bootstrap off" if ci is None else f"95% CI {ci[0]:.3f}-{ci[1]:.3f}"


def summary_line(result: AuditResult) -> str:
    """One line: verdict, F1 with interval and chance, limit, AUC, near-copies, power."""
    m, power = result.gate, result.power
    unit = ""
    if result.patient_level is not None:
        p, image = result.patient_level.patients, result.image_gate
        unit = (
            f" per patient ({p.n_used} used, {p.n_not_used} not_used patients; per image "
            f"F1 {image.f1:.3f}, AUC {image.auc:.3f})"
        )
    return (
        f"{result.verdict}: leakage F1{unit} {m.f1:.3f} ({interval_text(m.f1_ci)}, "
        f"chance {m.chance_f1:.3f}) vs limit {result.settings.max_f1:.3f}; "
        f"AUC {m.auc:.3f}; {len(result.near_copies or [])} near-copies; power check "
        f"{power.found if power else 0}/{power.planted if power else 0}"
        f"; {len(result.candidates)} candidates, {len(result.generated)} generated"
    )


def exposure_line(result: AuditResult) -> str | None:
    """How many members an attacker identifies at low FPR, against chance."""
    e = result.exposure
    if e is None:
        return None
    who = "members" if result.patient_level is None else "member patients"
    return (
        f"  {e.members_exposed} of {e.n_members} {who} exposed at {e.fpr:.1%} FPR "
        f"(expected by chance: {e.expected_by_chance:.1f}, p = {e.p_value:.2g}); "
        f"{e.non_members_exposed} of {e.n_non_members} non-members"
    )


def failure_lines(result: AuditResult) -> list[str]:
    """Why a FAIL fails, one check per line: the F1 may be under its limit while
    another check (near-copies, exposure, power) fails the release."""
    return [f"  fails because {why}" for why in result.failures]


def summary_lines(result: AuditResult) -> list[str]:
    """The summary line, why it fails, then exposure, the details and what was left
    out: what the terminal shows."""
    lines = [summary_line(result), *failure_lines(result), exposure_line(result)]
    lines += [details_line(result), baseline_line(result), left_out_line(result)]
    return [line for line in lines if line is not None]


def baseline_line(result: AuditResult) -> str | None:
    """How the key numbers moved since the baseline (None: no baseline)."""
    c = result.baseline
    if c is None:
        return None
    if not c.comparable:
        return f"  baseline {c.baseline.path}: not compared (other candidates)"
    moved = ", ".join(change.text() for change in c.changes)
    return f"  since the baseline ({c.baseline.verdict}, {c.baseline.created}): {moved}"


def left_out_line(result: AuditResult) -> str | None:
    """How many images were found and left out, per role and why (None: none)."""
    parts = []
    for images in _sets(result):
        counts = images.left_out_counts()
        if counts:
            why = ", ".join(f"{n} {kind}" for kind, n in counts.items())
            parts.append(f"{images.role} {sum(counts.values())} ({why})")
    if not parts:
        return None
    return (
        f"  left out: {'; '.join(parts)}; each is named under left_out in the JSON and the report"
    )


def _sets(result: AuditResult) -> tuple[ImageSet, ImageSet, ImageSet]:
    return (result.generated, result.candidates.members, result.candidates.non_members)


def left_out_json(result: AuditResult) -> list[dict[str, Any]]:
    """Every image found and left out, for any reason, named (images.LeftOut)."""
    return [
        {"role": images.role, "image": item.image, "why": item.why, "detail": item.detail}
        for images in _sets(result)
        for item in images.every_left_out()
    ]


def details_line(result: AuditResult) -> str:
    """The line under the summary: the seed method's metrics (accuracy, precision, recall,
    specificity), TPR at 1 % FPR and the time."""
    m = result.gate
    return (
        f"  accuracy {m.accuracy:.3f}  precision {m.precision:.3f}  recall {m.recall:.3f}  "
        f"specificity {m.specificity:.3f}  TPR@1%FPR {_number(m.tpr_at_1pct_fpr)}  "
        f"({result.seconds:.1f} s)"
    )


def near_copies_json(result: AuditResult) -> dict[str, Any] | None:
    """Near-copies: the threshold, counts and the pairs (most similar first, at most
    MAX_LISTED)."""
    nc = result.near_copies
    if nc is None:
        return None
    labels, ids, gen_ids = result.candidates.labels, result.candidates.ids, result.generated.ids
    t = nc.threshold
    return {
        "threshold": t.applied,
        "labels_blind_threshold": t.value,
        "reference": t.reference,
        "copy_level": t.copy_level,
        "limited_by": str(t.limited_by),
        "replicas": replicas_json(t.replicas),
        "count": len(nc),
        "members_copied": sum(int(labels[c]) for c in nc.copied),
        "non_members_copied": sum(1 - int(labels[c]) for c in nc.copied),
        "copied": [ids[c] for c in nc.copied],
        "max_shift_px": MAX_SHIFT,
        "max_turn_degrees": max(ANGLES),
        "listed_at_most": MAX_LISTED,
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


def replicas_json(test: ReplicaTest | None) -> dict[str, Any] | None:
    """The replica test (replicas.py): members above every non-member's best match."""
    if test is None:
        return None
    return {
        "non_members_best": test.level,
        "members_above": test.above,
        "members": test.members,
        "non_members": test.non_members,
        "unit": test.unit,
        "expected_by_chance": test.expected_by_chance,
        "p_value": test.p_value,
        "alpha": REPLICA_ALPHA,
        "significant": test.significant,
    }


def power_json(result: AuditResult) -> dict[str, Any] | None:
    power = result.power
    if power is None:
        return None
    return {
        "planted": power.planted,
        "found": power.found,
        "fraction": power.fraction,
        "needed": POWER_NEEDED,
        "conclusive": result.conclusive,
        "deciding_level": DECIDING_LEVEL,
        "levels": {
            name: {
                "planted": level.planted,
                "found": level.found,
                "fraction": level.fraction,
                "recipe": asdict(CANARY_LEVELS[name]),
            }
            for name, level in power.levels.items()
        },
    }


def exposure_json(result: AuditResult) -> dict[str, Any] | None:
    """Exposure at low FPR: the counts, chance, the exact test, the exposed members."""
    e = result.exposure
    if e is None:
        return None
    ids, alpha = result.candidates.ids, result.settings.exposure_alpha
    extra = {}
    if result.patient_level is not None:  # exposure counts patients: name them, and their images
        patients = result.patient_level.patients
        ids = patients.labels
        exposed = set(e.exposed)
        extra["exposed_images"] = [
            cid for c, cid in enumerate(result.candidates.ids) if int(patients.index[c]) in exposed
        ]
    return {
        "unit": result.membership_unit,
        "fpr": e.fpr,
        "achieved_fpr": e.achieved_fpr,
        "members_exposed": e.members_exposed,
        "non_members_exposed": e.non_members_exposed,
        "n_members": e.n_members,
        "n_non_members": e.n_non_members,
        "expected_by_chance": e.expected_by_chance,
        "p_value": e.p_value,
        "test": "stratified exact (per-fold hypergeometric), one-sided",
        "alpha": alpha,
        "significant": alpha > 0 and e.p_value < alpha,
        "exposed": [ids[i] for i in e.exposed],
        "exposed_by_near_copy": [ids[i] for i in e.by_near_copy],
        "thresholds": e.thresholds,
        **extra,
    }


def candidate_rows(result: AuditResult) -> list[dict[str, Any]]:
    """One row per candidate, in audit (content-hash) order: its short hash, label,
    the gate's score and out-of-fold call, every attack's score, and its nearest
    generated images (the gate's evidence)."""
    gate = result.attacks[result.gating_attack]
    evidence = gate.scores
    generated_ids = result.generated.ids
    patients = None if result.patient_level is None else result.patient_level.patients
    rows = []
    for i, (cid, sha, label) in enumerate(
        zip(result.candidates.ids, result.candidates.hashes, result.candidates.labels, strict=True)
    ):
        rows.append(
            {
                "id": cid,
                "sha256": sha[:SHORT_HASH],
                "label": "used" if label else "not_used",
                **({} if patients is None else {"patient": patients.label_of(i)}),
                "score": float(gate.scores.scores[i]),
                "called_used": bool(gate.metrics.calls[i]),
                "attack_scores": {n: float(a.scores.scores[i]) for n, a in result.attacks.items()},
                "nearest_generated": [
                    {"id": generated_ids[j], "similarity": float(sim)}
                    for j, sim in zip(
                        evidence.neighbour_indices[i],
                        evidence.neighbour_similarities[i],
                        strict=True,
                    )
                ],
            }
        )
    return rows


def image_level_json(result: AuditResult) -> dict[str, Any]:
    """The gate's numbers per image (with patients: folds and intervals by patient)."""
    m = result.image_gate
    return {
        "f1": m.f1,
        "f1_ci": None if m.f1_ci is None else list(m.f1_ci),
        "chance_f1": m.chance_f1,
        "auc": m.auc,
        "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr,
        "tpr_at_0_1pct_fpr": m.tpr_at_0_1pct_fpr,
        "confusion": m.confusion,
    }


def patients_json(result: AuditResult) -> list[dict[str, Any]] | None:
    """One row per patient (opaque label, privacy.py): membership, images, the gate's
    patient score and out-of-fold call."""
    if result.patient_level is None:
        return None
    level = result.patient_level
    p, m = level.patients, level.gate
    return [
        {
            "patient": p.labels[i],
            "label": "used" if p.membership[i] else "not_used",
            "images": int(p.images[i]),
            "score": float(m.scores[i]),
            "called_used": bool(m.calls[i]),
        }
        for i in range(len(p))
    ]


def orientation_json(result: AuditResult) -> dict[str, Any] | None:
    """The orientation check: what was chosen, and each orientation's similarity."""
    from .orientation import ORIENTATIONS

    o = result.orientation
    if o is None:
        return None
    return {
        "chosen": o.name,
        "turned": o.turned,
        "t_statistic": o.t_statistic,
        "similarity": dict(zip(ORIENTATIONS, o.similarity, strict=True)),
        "sampled_candidates": o.candidates,
        "sampled_generated": o.generated,
    }


def skipped_images(result: AuditResult) -> list[dict[str, Any]]:
    """Images left out as unreadable (skip_bad_images), with the reason."""
    return [
        {"role": s.role, "path": str(path), "reason": reason}
        for s in _sets(result)
        for path, reason in sorted(s.skipped.items(), key=lambda item: str(item[0]))
    ]


def result_json(result: AuditResult) -> dict[str, Any]:
    """The JSON result: the gate's numbers at the top level, then the details. NaN and
    infinity (not JSON) are written as null."""
    data = {
        "generator": GENERATOR,
        "created": result.created,
        "passed": result.passed,
        "verdict": result.verdict,
        **gate_json(result),
        **counts_json(result),
        "image_level": image_level_json(result),
        "patients": patients_json(result),
        "orientation": orientation_json(result),
        "features": str(result.settings.features),
        "encoder": result.encoder,
        "device": result.device,
        "world_size": result.world_size,
        "seed": result.settings.seed,
        "seconds": result.seconds,
        "timings": result.timings,
        "attacks": {
            name: {
                "description": a.scores.description,
                "seconds": result.attack_seconds(name),
                **a.metrics.as_dict(),
            }
            for name, a in result.attacks.items()
        },
        "inputs": {s.role: inputs_json(s) for s in _sets(result)},
        "settings": result.settings.as_dict(),
        "versions": result.versions,
        "candidates": candidate_rows(result),
        "failures": result.failures,
        "near_copies": near_copies_json(result),
        "power_check": power_json(result),
        "exposure": exposure_json(result),
        "warnings": result.warnings,
        "skipped_images": skipped_images(result),
        "left_out": left_out_json(result),
        "baseline": baseline_json(result),
        "cache": result.cache,
    }
    ready: dict[str, Any] = json_ready(data)
    return ready


def baseline_json(result: AuditResult) -> dict[str, Any] | None:
    """This audit against a previous one (--baseline): each key number's change."""
    c = result.baseline
    if c is None:
        return None
    return {
        "path": str(c.baseline.path),
        "created": c.baseline.created,
        "verdict": c.baseline.verdict,
        "comparable": c.comparable,
        "not_compared_because": c.not_comparable,
        "fail_on_regression": result.settings.fail_on_regression,
        "changes": {
            change.name: {
                "label": change.label,
                "count": change.count,
                "before": change.before,
                "after": change.after,
                "change": change.delta,
            }
            for change in c.changes
        },
    }


def gate_json(result: AuditResult) -> dict[str, Any]:
    """The gate's numbers, in the membership unit, and how it chose."""
    m = result.gate
    return {
        "f1": m.f1,
        "f1_ci": None if m.f1_ci is None else list(m.f1_ci),
        "chance_f1": m.chance_f1,
        "max_f1": result.settings.max_f1,
        "margin": result.settings.max_f1 - m.f1,
        "accuracy": m.accuracy,
        "precision": m.precision,
        "recall": m.recall,
        "specificity": m.specificity,
        "auc": m.auc,
        "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr,
        "tpr_at_0_1pct_fpr": m.tpr_at_0_1pct_fpr,
        "confusion": m.confusion,
        "gating_attack": result.gating_attack,
        "gate_choices": result.gate_choices,
        "threshold_policy": str(result.settings.threshold_policy),
    }


def counts_json(result: AuditResult) -> dict[str, Any]:
    """How many images (and patients) the numbers are of."""
    level = result.patient_level
    patients = None if level is None else level.patients
    return {
        "n_generated": len(result.generated),
        "n_used": len(result.candidates.members),
        "n_not_used": len(result.candidates.non_members),
        "membership_unit": result.membership_unit,
        "n_used_patients": None if patients is None else patients.n_used,
        "n_not_used_patients": None if patients is None else patients.n_not_used,
        "patient_score": None if level is None else level.rule,
    }


def inputs_json(images: ImageSet) -> dict[str, Any]:
    """One role's folder, count, manifest, what was left out and how it was windowed."""
    return {
        "folder": str(images.folder),
        "count": len(images),
        "manifest_sha256": images.manifest_sha256(),
        "left_out": images.left_out_counts(),
        "windowing": images.windowing(),
    }


def json_ready(value: Any) -> Any:
    """NaN and infinity are not JSON: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
