"""Audit settings shared by the pytest plugin and the command line.

Kept free of heavy imports: the plugin builds these at start-up.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import AuditInputError

# Chosen by measurement on ../shared/data/brainmri64 (see README, "Defaults"):
# with the "prevalence" threshold policy a labels-blind score gives F1 ~ 0.50 on a
# balanced candidate set and its 95th percentile stays below 0.57, so 0.60 keeps
# false alarms rare while a clear leak (VAE on 100 images: 0.69) fails.
DEFAULT_MAX_F1 = 0.60
DEFAULT_FEATURES = "pixels"
FEATURE_CHOICES = ("pixels", "vit")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
THRESHOLD_POLICIES = ("prevalence", "max-f1")


@dataclass
class AuditSettings:
    """Everything that decides an audit's numbers, plus where to write its outputs."""

    generated: Path
    used: Path
    not_used: Path
    max_f1: float = DEFAULT_MAX_F1
    report: Path | None = None
    json: Path | None = None
    features: str = DEFAULT_FEATURES
    device: str = "auto"
    seed: int = 0
    threshold_policy: str = "prevalence"
    folds: int = 5
    bootstrap: int = 1000
    # timm ViT features: a model name from timm's registry and a local weights file.
    vit_model: str = "vit_base_patch16_224"
    checkpoint: Path | None = None
    batch_size: int = 64
    workers: int | None = None  # None: one decoding worker per spare CPU core

    def __post_init__(self) -> None:
        try:
            self._validate()
        except argparse.ArgumentTypeError as exc:
            raise AuditInputError(str(exc)) from None

    def _validate(self) -> None:
        for name in ("generated", "used", "not_used", "report", "json", "checkpoint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        self.max_f1 = parse_max_f1(self.max_f1)
        self.features = parse_choice(self.features, FEATURE_CHOICES, "features")
        self.device = parse_choice(self.device, DEVICE_CHOICES, "device")
        self.threshold_policy = parse_choice(
            self.threshold_policy, THRESHOLD_POLICIES, "threshold policy"
        )
        self.seed = parse_int(self.seed, "seed", minimum=0)
        self.folds = parse_int(self.folds, "folds", minimum=2)
        self.bootstrap = parse_int(self.bootstrap, "bootstrap", minimum=0)
        self.batch_size = parse_int(self.batch_size, "batch size", minimum=1)
        if self.features == "vit" and self.checkpoint is None:
            raise argparse.ArgumentTypeError(
                "features 'vit' need a local weights file: give --checkpoint PATH "
                "(e.g. timm's vit_base_patch16_224.mae weights or an official MAE checkpoint)"
            )

    def as_dict(self) -> dict:
        """Plain, JSON-ready settings (paths as strings)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def parse_max_f1(value: object) -> float:
    """A leakage F1 limit: a number from 0 to 1 (argparse `type=` function)."""
    try:
        limit = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"the F1 limit must be a number between 0 and 1, got {value!r}"
        ) from None
    if not 0.0 <= limit <= 1.0:
        raise argparse.ArgumentTypeError(
            f"the F1 limit must be between 0 and 1, got {limit}"
        )
    return limit


def parse_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {value!r}: choose one of {', '.join(choices)}"
        )
    return text


def parse_int(value: object, what: str, minimum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"the {what} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"the {what} must be at least {minimum}, got {number}")
    return number
