"""Audit settings, and the one table of options that the command line and pytest share.

Each entry of `OPTIONS` is a field of `AuditSettings`, the flag `--<name>` of
`gan-privacy audit`, the pytest flag `--gan-audit-<name>` and the ini key
`gan_audit_<name>` (dashes for underscores in flags). Adding a setting means adding
a field and an entry here; the command line, the plugin and validation follow.

Kept free of heavy imports: the plugin reads this table at start-up.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import AuditInputError

# Chosen by measurement on ../shared/data/brainmri64 (README, "Defaults";
# benchmarks/threshold_policy.py): with the "prevalence" threshold policy a score with
# no information gets F1 0.50 on a balanced candidate set, 95th percentile 0.54-0.57,
# while the clear leaks score 0.95 (VAE trained on 100 images) and 0.998 (copies).
DEFAULT_MAX_F1 = 0.60
REQUIRED = ("generated", "used", "not_used")
DEFAULT_REPORT = "gan-audit-report.html"  # in the folder the audit is run from


class Choice(str, Enum):
    """A setting's choices: each member is its value where text is wanted (flags, the
    JSON, messages), and code compares members, never text."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __hash__(self) -> int:  # as its value's: a member and its text are one key
        return hash(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(str(member.value) for member in cls)


class Features(Choice):
    """The learned feature space beside the pixel-based ones (encoders.py registers a
    factory for each)."""

    MAE = "mae"  # a masked autoencoder trained on the generated images
    PIXELS = "pixels"  # none: the pixel-based spaces alone
    VIT = "vit"  # a timm ViT from a local checkpoint


class MaePreset(Choice):
    """The MAE's size and training (mae.PRESETS), auto: gpu on a CUDA device."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


class DeviceChoice(Choice):
    AUTO = "auto"  # CUDA when present
    CPU = "cpu"
    CUDA = "cuda"


class ThresholdPolicy(Choice):
    """How a cross-fitted threshold is chosen (metrics.THRESHOLD_RULES)."""

    PREVALENCE = "prevalence"  # call used the fraction of candidates that are members
    MAX_F1 = "max-f1"  # the threshold of the best F1 on the other folds


class NearCopySearch(Choice):
    """How the near-copy scan finds its pairs (shortlist.py)."""

    AUTO = "auto"  # every pair up to shortlist.INDEX_ABOVE pairs, an index above
    EXHAUSTIVE = "exhaustive"  # every generated image against every candidate
    INDEX = "index"  # a shortlist from a FAISS index, each pair checked exactly


class SliceAxis(Choice):
    """The axis NIfTI volumes are sliced along (nifti.SLICE_AXES)."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


class OutputKind(Choice):
    """What an output file is, as messages name it, and a file name to suggest for it."""

    REPORT = "report"
    JSON = "JSON"
    SUMMARY = "Markdown summary"
    PREDICTIONS = "predictions"
    SCORES = "scores"

    @classmethod
    def from_suffix(cls, suffix: str) -> OutputKind:
        """A report or its JSON, by the file's suffix."""
        return cls.JSON if suffix.lower() == ".json" else cls.REPORT

    @property
    def example(self) -> str:
        return {
            OutputKind.REPORT: DEFAULT_REPORT,
            OutputKind.JSON: DEFAULT_REPORT.replace(".html", ".json"),
            OutputKind.SUMMARY: DEFAULT_REPORT.replace("-report.html", "-summary.md"),
            OutputKind.PREDICTIONS: "predictions.csv",
            OutputKind.SCORES: "scores.csv",
        }[self]


# numpy, torch and scikit-learn all take a seed in 0 .. 2**32 - 1 (sklearn's
# random_state is the narrowest)
MAX_SEED = 2**32 - 1
# The most pixels one image file may hold: Pillow's decompression-bomb guard for PNG,
# JPEG, BMP and TIFF (images.py), and the default of --max-pixels for a DICOM file's
# frames together or a NIfTI volume (medical.py), checked from the header before any
# pixel is decoded. 16,384 x 16,384: a CT of 1,024 slices of 512 x 512.
MAX_PIXELS = 16_384 * 16_384
# an input folder, an input file, a file to write, a folder to write in (the cache)
PATH_KINDS = ("folder", "file", "output", "output_folder")


@dataclass
class AuditSettings:
    """Everything that decides an audit's numbers, plus where to write its outputs."""

    generated: Path
    used: Path
    not_used: Path
    max_f1: float = DEFAULT_MAX_F1
    report: Path | None = None
    json: Path | None = None
    features: Features = Features.MAE
    device: DeviceChoice = DeviceChoice.AUTO
    seed: int = 0
    threshold_policy: ThresholdPolicy = ThresholdPolicy.PREVALENCE
    folds: int = 5
    bootstrap: int = 1000
    # timm ViT features: a model name from timm's registry and a local weights file
    vit_model: str = "vit_base_patch16_224"
    checkpoint: Path | None = None
    # the masked autoencoder trained on the generated images (features "mae")
    mae_preset: MaePreset = MaePreset.AUTO
    mae_epochs: int | None = None  # None: the preset's
    mae_max_images: int | None = None  # None: the preset's
    batch_size: int = 64
    workers: int | None = None  # None: the spare CPU cores decode images
    # the report shows real (patient) images only when asked: it is meant to be shareable
    report_real_thumbnails: bool = False
    skip_bad_images: bool = False
    cache_dir: Path | None = None  # None: $GAN_PRIVACY_CACHE_DIR or the user's cache folder
    no_cache: bool = False
    # extra real images, neither candidates nor training images, for the calibrated attacks
    reference: Path | None = None
    fail_on_near_copies: bool = False
    near_copy_search: NearCopySearch = NearCopySearch.AUTO
    # the default gate also fails when a member has a near-copy, and when members are
    # exposed at low FPR beyond chance at this significance level (0: not checked)
    allow_member_near_copies: bool = False
    exposure_alpha: float = 0.01
    canaries: int = 100  # members copied by the power check, at each of its levels
    fail_inconclusive: bool = False
    # medical formats (medical.DecodeOptions): a VOI window (center, width) in the
    # modality's units that overrides every header, how NIfTI volumes are sliced
    window: tuple[float, float] | None = None
    slice_axis: SliceAxis = SliceAxis.AXIAL
    slice_range: tuple[int | None, int | None] | None = None  # START <= slice < STOP
    volume: int | None = None  # the volume of a 4-D NIfTI series
    max_pixels: int = MAX_PIXELS  # the most pixels one DICOM or NIfTI file may hold
    groups: Path | None = None  # CSV "image path,group": the patient of each image
    # CI: a Markdown summary, and a previous audit's JSON to compare with (baseline.py)
    summary_md: Path | None = None
    baseline: Path | None = None
    fail_on_regression: float | None = None  # fail when F1 or AUC grew by more than this

    def __post_init__(self) -> None:
        parse_fields(self, OPTIONS)
        if self.fail_on_regression is not None and self.baseline is None:
            raise AuditInputError(
                "--fail-on-regression compares with a previous audit: give its JSON with "
                "--baseline PREVIOUS.json"
            )
        if self.features is Features.VIT and self.checkpoint is None:
            raise AuditInputError(
                "features 'vit' need a local weights file: give --checkpoint PATH "
                "(e.g. timm's vit_base_patch16_224.mae weights or an official MAE checkpoint)"
            )

    def inputs(self) -> dict[str, Path]:
        """What the audit reads: setting name -> path (input folders and files), for the
        checks that outputs never touch them."""
        return {
            o.name: getattr(self, o.name)
            for o in OPTIONS
            if o.kind in ("folder", "file") and getattr(self, o.name) is not None
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready settings (paths as strings)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, (Path, Choice)) else value
        return out


# what a `gan_audit` marker may set: every setting
MARKER_KEYS = tuple(sorted(f.name for f in fields(AuditSettings)))


def default_of(name: str) -> Any:
    """The default value of a setting (MISSING for the required folders)."""
    field = next(f for f in fields(AuditSettings) if f.name == name)
    return field.default


@dataclass(frozen=True)
class Option:
    """One setting as the command line and pytest see it."""

    name: str
    help: str
    # str, folder (an input folder), file (an input file), output (a file to write),
    # output_folder, fraction, probability, int, choice, bool, window or range
    kind: str = "str"
    choices: type[Choice] | None = None  # for kind "choice"
    minimum: int = 0
    maximum: int | None = None
    output: OutputKind | None = None  # for kind "output"
    required: bool = False  # on the command line, whatever its default
    shown_default: str | None = None  # how the default reads, where its value says little
    called: str | None = None  # how messages name it (default: its name in words)

    @property
    def what(self) -> str:
        return self.called or self.name.replace("_", " ")

    @property
    def needed(self) -> bool:
        """Whether the command line requires it."""
        return self.required or self.default is MISSING

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def is_path(self) -> bool:
        return self.kind in PATH_KINDS

    def spellings(self) -> str:
        """How a user sets it: for messages that say which option to fix."""
        return (
            f"--{self.flag} (pytest: --gan-audit-{self.flag} or the ini key gan_audit_{self.name})"
        )

    @property
    def default(self) -> Any:
        return default_of(self.name)

    @property
    def default_text(self) -> str:
        """The default as a user reads it: "required", "off", "none", a value."""
        default = self.default
        if default is MISSING or self.required:
            return "required"
        if self.shown_default is not None:
            return self.shown_default
        if default is False:
            return "off"
        if default is None:
            return "none"
        if isinstance(default, int) and not isinstance(default, bool) and default >= 10_000:
            return f"{default:,}"
        return str(default)

    def describe(self) -> str:
        """The help text with the default, for --help (argparse formats help strings
        with %, so a literal % is doubled)."""
        text = self.help
        if self.default_text == "required":
            text += " (required)"
        elif self.default_text not in ("off", "none"):
            text += f" (default: {self.default_text})"
        return text.replace("%", "%%")

    def parse(self, value: Any) -> Any:
        """A value from a flag, an ini file or a marker, validated; raises
        argparse.ArgumentTypeError with a message that says what is allowed."""
        if self.is_path:
            return parse_path(value, self.what, self.kind, self.output)
        if self.kind == "fraction":
            return parse_fraction(value, self.what)
        if self.kind == "probability":
            return parse_probability(value, self.what)
        if self.kind == "int":
            return parse_int(value, self.what, self.minimum, self.maximum)
        if self.kind == "choice":
            assert self.choices is not None
            return parse_choice(value, self.choices, self.what)
        if self.kind == "bool":
            return parse_bool(value, self.name)
        if self.kind == "window":
            return parse_window(value)
        if self.kind == "range":
            return parse_slice_range(value)
        return parse_text(value, self.what)


OPTIONS: tuple[Option, ...] = (
    Option("generated", "folder of generated images", "folder"),
    Option("used", "folder of real images the model was trained on (members)", "folder"),
    Option("not_used", "folder of real images it was not trained on (non-members)", "folder"),
    Option("max_f1", "fail when the leakage F1 is over this limit", "fraction", called="F1 limit"),
    Option(
        "report",
        "HTML report to write",
        "output",
        output=OutputKind.REPORT,
        shown_default=f"./{DEFAULT_REPORT}",
    ),
    Option(
        "json",
        "JSON result to write",
        "output",
        output=OutputKind.JSON,
        shown_default="the report's path with .json",
    ),
    Option(
        "features",
        "learned features beside the pixel-based ones: mae (a masked autoencoder trained "
        "on the generated images), vit (a timm ViT from --checkpoint) or pixels (none)",
        "choice",
        Features,
    ),
    Option(
        "device",
        "where to compute: auto (CUDA when present), cpu or cuda",
        "choice",
        DeviceChoice,
    ),
    Option("seed", "random seed of folds, bootstrap and training", "int", maximum=MAX_SEED),
    Option(
        "threshold_policy", "how the cross-fitted threshold is chosen", "choice", ThresholdPolicy
    ),
    Option("folds", "cross-fitting folds", "int", minimum=2, maximum=1000),
    Option(
        "bootstrap",
        "bootstrap resamples for the F1 interval (0: none, and no interval is shown)",
        "int",
        maximum=100_000,
    ),
    Option(
        "checkpoint",
        "local weights file (safetensors or state dict): the ViT for --features vit; for "
        "mae, pretrained MAE/ViT encoder weights to start training from",
        "file",
    ),
    Option("vit_model", "timm model name matching the checkpoint"),
    Option(
        "mae_preset",
        "the MAE's size and training: cpu (minutes on 2 cores), gpu (ViT-B-like); auto "
        "picks by the device",
        "choice",
        MaePreset,
    ),
    Option(
        "mae_epochs",
        "MAE training epochs",
        "int",
        minimum=1,
        maximum=10_000,
        shown_default="the preset's (8 on a CPU, 100 on a GPU)",
    ),
    Option(
        "mae_max_images",
        "the MAE trains on at most this many generated images",
        "int",
        minimum=1,
        maximum=10**9,
        shown_default="the preset's (4,096 on a CPU, 20,000 on a GPU)",
    ),
    Option("batch_size", "images encoded per batch", "int", minimum=1, maximum=4096),
    Option(
        "workers",
        "image decoding processes",
        "int",
        maximum=64,
        shown_default="the spare CPU cores, at most 4",
    ),
    Option(
        "report_real_thumbnails",
        "show thumbnails of the real candidates in the HTML report (patient images: "
        "for internal reports only)",
        "bool",
    ),
    Option(
        "skip_bad_images",
        "leave out images that cannot be read, and list them in the report, instead of stopping",
        "bool",
    ),
    Option(
        "cache_dir",
        "folder for cached features, weights and near-copy scans",
        "output_folder",
        shown_default="$GAN_PRIVACY_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, then "
        "/pytest-gan-privacy",
    ),
    Option("no_cache", "read and write no cached features or weights", "bool"),
    Option(
        "reference",
        "folder of extra real images that are neither candidates nor training images; the "
        "calibrated attacks compare with them instead of the other candidates",
        "folder",
    ),
    Option(
        "fail_on_near_copies",
        "fail when any generated image is a near-copy, also of a non-member",
        "bool",
    ),
    Option(
        "near_copy_search",
        "how the near-copy scan finds its pairs: auto (every pair for up to 16.8 million "
        "generated x candidate pairs, an index above), exhaustive, or index (a FAISS "
        "shortlist, each pair checked exactly)",
        "choice",
        NearCopySearch,
    ),
    Option(
        "allow_member_near_copies",
        "do not fail when a member has a near-copy among the generated images",
        "bool",
    ),
    Option(
        "exposure_alpha",
        "fail when members are identified at low FPR beyond chance with p below this "
        "(0: no exposure check)",
        "probability",
    ),
    Option(
        "canaries",
        "members copied by the power check at each of its levels (exact, standard, hard)",
        "int",
        minimum=1,
        maximum=10_000,
    ),
    Option(
        "fail_inconclusive",
        "fail when the power check finds fewer than 90% of the planted copies",
        "bool",
    ),
    Option(
        "window",
        "DICOM and NIfTI: the VOI window CENTER,WIDTH in the modality's units (HU for CT) "
        "for every input, overriding the headers' windows; a negative centre needs the = form: "
        "--window=-600,1500",
        "window",
        shown_default="the header's first window, else a 0.5-99.5 percentile window",
    ),
    Option("slice_axis", "NIfTI: the axis volumes are sliced along", "choice", SliceAxis),
    Option(
        "slice_range",
        "NIfTI: only the slices START:STOP (START <= slice < STOP, in the reoriented "
        "volume; either end may be left out, e.g. 10:50)",
        "range",
        shown_default="every slice",
    ),
    Option(
        "volume",
        "NIfTI: the volume of a 4-D series to slice (0 is the first)",
        "int",
        maximum=100_000,
    ),
    Option(
        "max_pixels",
        "DICOM and NIfTI: the most pixels one file may hold (rows x columns x frames, a "
        "volume's voxels), checked from its header before any pixel is decoded; raise it "
        "for larger files if memory allows (a pixel takes 2 to 8 bytes decoded)",
        "int",
        minimum=1,
        maximum=2**40,
    ),
    Option(
        "summary_md",
        "Markdown summary to write (verdict, key numbers, where the report is; no image or "
        "identifier); also appended to $GITHUB_STEP_SUMMARY when that is set",
        "output",
        output=OutputKind.SUMMARY,
    ),
    Option(
        "baseline",
        "the JSON of a previous audit of the same candidates: every key number's change "
        "since is shown",
        "file",
    ),
    Option(
        "fail_on_regression",
        "fail when the leakage F1 or the AUC grew by more than this since the baseline, "
        "even under the limit (needs --baseline)",
        "fraction",
        called="regression margin",
    ),
    Option(
        "groups",
        "CSV of 'image path,group' lines: the patient of each real image (paths relative "
        "to the CSV's folder); needed for PNG/JPEG folders; overrides DICOM PatientIDs",
        "file",
    ),
)


def options_table() -> str:
    """The configuration table of the README (between its `options:start` and
    `options:end` markers; a test keeps them equal): each option's three spellings, its
    default and what it sets. `python -m pytest_gan_privacy.settings` prints it."""
    rows = [
        "| command line (`gan-privacy audit`) | pytest option | ini key | default | what it sets |",
        "|---|---|---|---|---|",
    ]
    for o in OPTIONS:
        cells = [f"`--{o.flag}`", f"`--gan-audit-{o.flag}`", f"`gan_audit_{o.name}`"]
        cells += [o.default_text, o.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def parse_fields(settings: object, options: tuple[Option, ...]) -> None:
    """Validate (and convert) the settings' fields that `options` name, in place: every
    value, whether from a flag, an ini file, a marker or Python, passes one parser."""
    try:
        for option in options:
            value = getattr(settings, option.name)
            if value is not None:
                setattr(settings, option.name, option.parse(value))
    except argparse.ArgumentTypeError as exc:
        raise AuditInputError(str(exc)) from None


def parse_fraction(value: object, what: str) -> float:
    """A number from 0 to 1 (the F1 limit, a margin of F1 or AUC)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"the {what} must be a number between 0 and 1, got {value!r}"
        ) from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"the {what} must be between 0 and 1, got {number}")
    return number


def parse_probability(value: object, what: str) -> float:
    """A significance level: a number from 0 up to, not including, 1."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"the {what} must be a number from 0 to below 1, got {value!r}"
        ) from None
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"the {what} must be from 0 to below 1, got {number}")
    return number


def parse_choice(value: object, choices: type[Choice], what: str) -> Choice:
    """A member of `choices`, from its value (any case)."""
    text = str(value).strip().lower()
    for member in choices:
        if str(member.value).lower() == text:
            return member
    raise argparse.ArgumentTypeError(
        f"unknown {what} {value!r}: choose one of {', '.join(choices.values())}"
    )


def parse_int(value: object, what: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number from `minimum` to `maximum` (None: no upper end)."""
    allowed = f"from {minimum} to {maximum:,}" if maximum is not None else f"{minimum} or more"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the {what} must be a whole number {allowed}, got {value!r}"
        ) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise argparse.ArgumentTypeError(f"the {what} must be {allowed}, got {number}")
    return number


def parse_text(value: object, what: str) -> str:
    """A non-empty name without control characters."""
    text = str(value).strip()
    if not text or any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(
            f"the {what} must be a non-empty name without control characters, got {value!r}"
        )
    return text


def parse_path(
    value: object, what: str, kind: str = "folder", output: OutputKind | None = None
) -> Path:
    """A path, not empty (an unset variable, `--generated ""`, would mean the working
    folder) and without NUL (no file system takes one). An output must name a file."""
    text = str(value)
    if not isinstance(value, Path) and not text.strip():
        raise argparse.ArgumentTypeError(
            f"the {what} path is empty (an unset variable?): give a path; an empty one "
            "would mean the working folder"
        )
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"the {what} path contains a NUL character: {text!r}")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~name of a user who does not exist, or no home folder
        raise argparse.ArgumentTypeError(
            f"the {what} path {text!r} starts with ~ but that home folder is unknown: give "
            "the full path"
        ) from None
    if kind == "output" and path.name in ("", ".", ".."):
        example = Path(text) / (output or OutputKind.REPORT).example
        raise argparse.ArgumentTypeError(
            f"the {what} path {text!r} names a folder, not a file: give a file name, e.g. {example}"
        )
    return path


def parse_bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{what} must be true or false, got {value!r}")


def parse_window(value: object) -> tuple[float, float]:
    """A VOI window "CENTER,WIDTH" (or a pair of numbers): width above 0."""
    usage = "CENTER,WIDTH, e.g. 40,400 (a negative centre: --window=-600,1500)"
    parts = list(value) if isinstance(value, (tuple, list)) else str(value).split(",")
    try:
        center, width = (float(str(part).strip()) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the window must be {usage}, got {value!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise argparse.ArgumentTypeError(f"the window must be finite numbers, got {value!r}")
    if width <= 0:
        raise argparse.ArgumentTypeError(
            f"the window width must be greater than 0, got {width:g}: {usage}"
        )
    return center, width


def parse_slice_range(value: object) -> tuple[int | None, int | None]:
    """A slice range "START:STOP" of whole numbers >= 0 (either may be left out)."""
    usage = "START:STOP, e.g. 10:50 (slices 10 to 49), 10: or :50"
    if isinstance(value, (tuple, list)):
        parts = ["" if part is None else str(part) for part in value]
    else:
        parts = str(value).split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"the slice range must be {usage}, got {value!r}")
    try:
        start, stop = (int(part) if part.strip() else None for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the slice range must be {usage} (whole numbers), got {value!r}"
        ) from None
    if any(end is not None and end < 0 for end in (start, stop)):
        raise argparse.ArgumentTypeError(
            f"the slice range counts from slice 0: no negative ends, got {value!r}"
        )
    if start is not None and stop is not None and stop <= start:
        raise argparse.ArgumentTypeError(
            f"the slice range {value!r} holds no slice: STOP must be above START ({usage})"
        )
    return start, stop


# --- where the inputs are ------------------------------------------------------------


def real_path(path: Path) -> Path:
    """The path with links and `..` resolved, whether or not it exists."""
    return Path(os.path.realpath(path))


def _role(name: str) -> str:
    return name.replace("_", " ") if name != "not_used" else "not_used"


def check_input_paths(settings: AuditSettings) -> None:
    """The inputs make sense, before any work: each names an existing folder (or file),
    and no input folder is another or lies inside another (generated holding the real
    folders, used inside generated, a reference folder that is a candidates' folder...):
    an image would then count in two roles. AuditInputError says which, and the fix."""
    option = {o.name: o for o in OPTIONS}
    folders: dict[str, Path] = {}
    for name, path in settings.inputs().items():
        kind = option[name].kind
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # a name too long, a folder without permission...
            raise AuditInputError(
                f"the {_role(name)} path {path} cannot be looked at ({exc.strerror or exc}): "
                f"check {option[name].spellings()}"
            ) from None
        if not exists:
            raise AuditInputError(
                f"the {_role(name)} {'folder' if kind == 'folder' else 'file'} {path} does not "
                f"exist: check the path given with {option[name].spellings()}"
            )
        if kind == "folder" and not is_dir:
            raise AuditInputError(
                f"the {_role(name)} path {path} is not a folder: give a folder of images "
                f"with {option[name].spellings()}"
            )
        if kind == "file" and is_dir:
            raise AuditInputError(
                f"the {_role(name)} path {path} is a folder: give a file with "
                f"{option[name].spellings()}"
            )
        if kind == "folder":
            folders[name] = real_path(path)
    names = list(folders)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if folders[a] == folders[b]:
                raise AuditInputError(
                    f"the {_role(a)} and {_role(b)} folders are the same folder "
                    f"({folders[a]}): each role needs its own folder of images"
                )
            for inner, outer in ((a, b), (b, a)):
                if folders[outer] in folders[inner].parents:
                    raise AuditInputError(
                        f"the {_role(inner)} folder {getattr(settings, inner)} is inside the "
                        f"{_role(outer)} folder {getattr(settings, outer)}: its images would "
                        f"count as {_role(outer)} images too. Give folders that do not contain "
                        "one another, e.g. generated/ beside real/used/ and real/not_used/"
                    )


# --- gan-privacy predict -------------------------------------------------------------

# The audit's options that `gan-privacy predict` takes as they are: its inputs, how
# images are read and scored, and the cross-fitting of the development estimate. The
# gate's (limit, near-copy and exposure checks, power check) and the report's do not
# apply: predict gives calls, not a verdict.
PREDICT_SHARED = (
    "generated",
    "used",
    "not_used",
    "features",
    "device",
    "seed",
    "folds",
    "bootstrap",
    "checkpoint",
    "vit_model",
    "mae_preset",
    "mae_epochs",
    "mae_max_images",
    "batch_size",
    "workers",
    "skip_bad_images",
    "cache_dir",
    "no_cache",
    "reference",
    "window",
    "slice_axis",
    "slice_range",
    "volume",
    "max_pixels",
    "groups",
)


@dataclass
class PredictSettings:
    """`gan-privacy predict`: the development set and how to score it (`audit`, the
    audit's own settings: `used` and `not_used` are the labelled development images),
    the unlabelled candidates, and where to write the calls."""

    audit: AuditSettings
    candidates: Path
    out: Path | None = None  # required on the command line
    scores: Path | None = None
    json: Path | None = None

    def __post_init__(self) -> None:
        parse_fields(self, PREDICT_OPTIONS)

    def inputs(self) -> dict[str, Path]:
        """What predict reads: the audit's inputs and the unlabelled candidates."""
        return {**self.audit.inputs(), "candidates": self.candidates}

    def as_dict(self) -> dict[str, Any]:
        shared = self.audit.as_dict()
        out = {name: shared[name] for name in PREDICT_SHARED}
        for option in PREDICT_OPTIONS:
            value = getattr(self, option.name)
            out[option.name] = None if value is None else str(value)
        return out


@dataclass(frozen=True)
class PredictOption(Option):
    """An option of predict alone; its default is PredictSettings'."""

    @property
    def default(self) -> Any:
        return next(f.default for f in fields(PredictSettings) if f.name == self.name)

    def spellings(self) -> str:
        return f"--{self.flag} of gan-privacy predict"


PREDICT_OPTIONS: tuple[PredictOption, ...] = (
    PredictOption(
        "candidates",
        "folder of unlabelled real images: which of them trained the model is predicted",
        "folder",
    ),
    PredictOption(
        "out",
        "CSV to write: '<file name>,<1|0>' per candidate (1 = used)",
        "output",
        output=OutputKind.PREDICTIONS,
        required=True,
    ),
    PredictOption(
        "scores",
        "CSV to write: '<file name>,<score>' per candidate",
        "output",
        output=OutputKind.SCORES,
    ),
    PredictOption(
        "json",
        "JSON to write: the development estimate and the calls' summary",
        "output",
        output=OutputKind.JSON,
    ),
)


def check_predict_paths(settings: PredictSettings) -> None:
    """The audit's checks of its inputs, and the candidates folder: it exists and is
    none of the other folders, nor inside one, nor holding one."""
    check_input_paths(settings.audit)
    where = settings.candidates
    if not where.is_dir():
        raise AuditInputError(
            f"the candidates folder {where} "
            f"{'is not a folder' if where.exists() else 'does not exist'}: give the folder of "
            "unlabelled real images with --candidates"
        )
    mine = real_path(where)
    for name, path in settings.audit.inputs().items():
        if not path.is_dir():
            continue
        other = real_path(path)
        role = name.replace("_", " ") if name != "not_used" else "not_used"
        if mine == other or other in mine.parents or mine in other.parents:
            raise AuditInputError(
                f"the candidates folder {where} and the {role} folder {path} are the same "
                "folder or one holds the other: the unlabelled images need a folder of their "
                "own, beside the development folders"
            )


if __name__ == "__main__":
    print(options_table())
