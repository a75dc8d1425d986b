"""A baseline across releases: this audit's key numbers against a previous audit's JSON.

A team releases its synthetic set again and again (a retrained model, another epoch);
`--baseline PREVIOUS.json` shows how each key number moved since, and
`--fail-on-regression MARGIN` fails the gate when the leakage F1 or the AUC grew by more
than MARGIN, even under the limit. The numbers compare only when both audits scored the
same candidates: the used and not_used manifests (SHA-256 of their image hashes) must be
equal, else nothing is compared and the audit says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuditInputError, printable
from .exposure import Exposure
from .metrics import MembershipMetrics
from .nearcopies import NearCopies

# the key numbers, in the order shown: JSON key, what a reader calls it, whether it is
# a count (for every one, higher means more leakage)
KEY_NUMBERS = (
    ("f1", "leakage F1", False),
    ("auc", "AUC", False),
    ("tpr_at_1pct_fpr", "TPR at 1% FPR", False),
    ("members_exposed", "members exposed", True),
    ("near_copies", "near-copies", True),
)
# a regression fails the gate on these, when --fail-on-regression is set
GATED = ("f1", "auc")


@dataclass(frozen=True)
class Baseline:
    """A previous audit's key numbers and the candidates it scored."""

    path: Path
    numbers: dict[str, float | None]
    manifests: dict[str, str]  # role -> manifest SHA-256 (used, not_used)
    verdict: str
    created: str


@dataclass(frozen=True)
class Change:
    name: str  # the JSON key
    label: str  # what a reader calls it
    before: float | None
    after: float | None
    count: bool = False  # a whole number of members or images

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    def show(self, value: float | None, signed: bool = False) -> str:
        """A value of this number as a reader sees it ("n/a": not measured)."""
        if value is None:
            return "n/a"
        sign = "+" if signed else ""
        return f"{value:{sign}.0f}" if self.count else f"{value:{sign}.3f}"

    def text(self) -> str:
        """e.g. "leakage F1 0.512 -> 0.587 (+0.075)"."""
        moved = f"{self.label} {self.show(self.before)} -> {self.show(self.after)}"
        return moved if self.delta is None else f"{moved} ({self.show(self.delta, True)})"


@dataclass(frozen=True)
class Comparison:
    """This audit against its baseline: the changes, or why nothing is compared."""

    baseline: Baseline
    changes: list[Change] = field(default_factory=list)
    not_comparable: str | None = None  # why nothing is compared

    @property
    def comparable(self) -> bool:
        return self.not_comparable is None

    def grew(self, margin: float) -> list[Change]:
        """The gated numbers that grew by more than `margin`."""
        return [
            c
            for c in self.changes
            if c.name in GATED and c.delta is not None and c.delta > margin + 1e-12
        ]


def read_baseline(path: Path) -> Baseline:
    """A previous audit's JSON (as `--json` writes it), checked before any work."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditInputError(
            f"the baseline {path} does not exist: give the JSON of a previous audit with --baseline"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise AuditInputError(
            f"the baseline {path} cannot be read as a JSON result ({why}): give the JSON a "
            "previous audit wrote (--json)"
        ) from None
    try:
        inputs = data["inputs"]
        manifests = {role: str(inputs[role]["manifest_sha256"]) for role in ("used", "not_used")}
        numbers = key_numbers(data)
        return Baseline(path, numbers, manifests, str(data["verdict"]), str(data["created"]))
    except (KeyError, TypeError, ValueError):
        raise AuditInputError(
            f"the baseline {path} is not an audit's JSON result (no verdict, numbers or input "
            "manifests): give the JSON a previous gan-privacy audit wrote (--json)"
        ) from None


def key_numbers(data: dict[str, Any]) -> dict[str, float | None]:
    """The key numbers of a JSON result (None: not measured)."""
    exposure = data.get("exposure") or {}
    near = data.get("near_copies") or {}
    raw = {
        "f1": data["f1"],
        "auc": data["auc"],
        "tpr_at_1pct_fpr": data.get("tpr_at_1pct_fpr"),
        "members_exposed": exposure.get("members_exposed"),
        "near_copies": near.get("count"),
    }
    return {k: None if v is None else _number(v) for k, v in raw.items()}


def _number(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def current_numbers(
    gate: MembershipMetrics, exposure: Exposure | None, near_copies: NearCopies | None
) -> dict[str, float | None]:
    """This audit's key numbers, as `key_numbers` reads them from its JSON."""
    return {
        "f1": gate.f1,
        "auc": gate.auc,
        "tpr_at_1pct_fpr": gate.tpr_at_1pct_fpr,
        "members_exposed": None if exposure is None else float(exposure.members_exposed),
        "near_copies": None if near_copies is None else float(len(near_copies)),
    }


def compare(
    baseline: Baseline, manifests: dict[str, str], numbers: dict[str, float | None]
) -> Comparison:
    """This audit (its candidates' manifests, role -> SHA-256, and key numbers) against
    the baseline: every key number's change, when both scored the same candidates."""
    differ = [role for role in ("used", "not_used") if manifests[role] != baseline.manifests[role]]
    if differ:
        return Comparison(
            baseline,
            not_comparable=(
                f"the baseline {printable(baseline.path)} audited other candidates (its "
                f"{' and '.join(differ)} images differ from this audit's): nothing is "
                "compared. Audit each release against the same used and not_used images"
            ),
        )
    changes = [
        Change(k, label, baseline.numbers[k], numbers[k], count) for k, label, count in KEY_NUMBERS
    ]
    return Comparison(baseline, changes)
