"""What a reader must know before trusting a verdict: the warnings an audit's result
carries (in the terminal, the JSON and the report), each saying what to do."""

from __future__ import annotations

from collections.abc import Callable

from .errors import printable
from .metrics import chance_over_limit
from .nearcopies import LimitedBy
from .orientation import orientation_warning
from .result import AuditResult
from .results import skipped_images

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
    """What a reader must know before trusting the verdict, in the order shown."""
    return [warning for caveat in CAVEATS for warning in caveat(result)]


def _turned(result: AuditResult) -> list[str]:
    o = result.orientation
    return [orientation_warning(o)] if o is not None and o.turned else []


def _few_candidates(result: AuditResult) -> list[str]:
    n_m, n_n = len(result.candidates.members), len(result.candidates.non_members)
    if min(n_m, n_n) >= MIN_CANDIDATES_PER_CLASS:
        return []
    return [
        f"too few candidates to mean much: {n_m} used and {n_n} not_used (fewer than "
        f"{MIN_CANDIDATES_PER_CLASS} per class). By chance alone the F1 can land far from "
        "its true value, so neither a PASS nor a FAIL is evidence; use at least 100 of each"
    ]


def _few_patients(result: AuditResult) -> list[str]:
    if result.patient_level is None:
        return []
    p, limit = result.patient_level.patients, result.settings.max_f1
    luck = chance_over_limit(p.n_used, p.n_not_used, limit)
    if luck <= MAX_LUCK and min(p.n_used, p.n_not_used) >= MIN_CANDIDATES_PER_CLASS:
        return []
    return [
        f"too few patients to mean much: {p.n_used} used and {p.n_not_used} not_used. "
        f"The gate's numbers are per patient, and a labels-blind guess gets an F1 over "
        f"the limit {limit:.3f} {luck:.1%} of the time with this few: "
        "a FAIL on the F1 alone may be chance. Judge by the interval and the AUC, or "
        "audit more patients (about 100 per class)"
    ]


def _few_generated(result: AuditResult) -> list[str]:
    n_generated, n_candidates = len(result.generated), len(result.candidates)
    if n_generated >= n_candidates:
        return []
    return [
        f"fewer generated images ({n_generated}) than candidates ({n_candidates}): "
        "most candidates have no generated image to be like, so a PASS means little. "
        "Audit a sample of generated images at least as large as the candidate set"
    ]


def _copies_in_a_folder(result: AuditResult) -> list[str]:
    out = []
    c = result.candidates
    for images in (result.generated, c.members, c.non_members):
        if images.duplicates:
            pairs = ", ".join(
                f"{images.role}/{printable(copy)} = {images.role}/{printable(kept)}"
                for copy, kept in images.duplicates[:DUPLICATES_SHOWN]
            )
            more = " ..." if len(images.duplicates) > DUPLICATES_SHOWN else ""
            out.append(
                f"{len(images.duplicates)} {images.role} image(s) are copies of another image "
                f"in that folder (the same file content or the same pixels) and were counted "
                f"once: {pairs}{more}. Remove the copies"
            )
    return out


def _unbalanced(result: AuditResult) -> list[str]:
    n_m, n_n = len(result.candidates.members), len(result.candidates.non_members)
    if max(n_m, n_n) <= MAX_CLASS_RATIO * min(n_m, n_n):
        return []
    return [
        f"unbalanced candidates: {n_m} used vs {n_n} not_used. F1 means little here: a "
        f"labels-blind guess gets {result.gate.chance_f1:.3f} against the limit "
        f"{result.settings.max_f1:.3f}, which assumes a balanced set. Judge by the AUC "
        "and the F1 over its chance level, or balance the used and not_used folders"
    ]


def _inconclusive(result: AuditResult) -> list[str]:
    if result.power is None or result.conclusive or result.near_copies is None:
        return []
    return [_weak_power(result)]


def _skipped(result: AuditResult) -> list[str]:
    skipped = skipped_images(result)
    if not skipped:
        return []
    by_role = ", ".join(
        f"{role} {sum(s['role'] == role for s in skipped)}"
        for role in ("generated", "used", "not_used")
        if any(s["role"] == role for s in skipped)
    )
    return [
        f"{len(skipped)} unreadable image(s) were skipped ({by_role}) and are not in "
        "the numbers; see skipped_images"
    ]


def _baseline_elsewhere(result: AuditResult) -> list[str]:
    b = result.baseline
    return [] if b is None or b.comparable else [str(b.not_comparable)]


def _byte_copies(result: AuditResult) -> list[str]:
    generated = set(result.generated.hashes)
    c = result.candidates
    copies = [
        f"{role}/{printable(image_id)}"
        for role, images in (("used", c.members), ("not_used", c.non_members))
        for image_id, h in zip(images.ids, images.hashes, strict=True)
        if h in generated
    ]
    if not copies:
        return []
    shown = ", ".join(copies[:10]) + (" ..." if len(copies) > 10 else "")
    return [
        f"{len(copies)} real image(s) appear byte for byte among the generated images, "
        f"the worst leak: {shown}"
    ]


def _weak_power(result: AuditResult) -> str:
    """Why the power check missed its planted copies, and what to do."""
    power, t = result.power, result.near_copies.threshold
    found = f"the power check found only {power.found} of {power.planted} planted copies"
    if t.limited_by is LimitedBy.REAL_PAIRS and t.pair is not None:
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


# every caveat, in the order the warnings are shown
CAVEATS: tuple[Callable[[AuditResult], list[str]], ...] = (
    _turned,
    _few_candidates,
    _few_patients,
    _few_generated,
    _copies_in_a_folder,
    _unbalanced,
    _inconclusive,
    _skipped,
    _byte_copies,
    _baseline_elsewhere,
)
