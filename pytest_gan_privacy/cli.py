"""The command line: `gan-privacy audit`, the same audit as under pytest.

Exit status: 0 the leakage F1 is within the limit, 1 it is over, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import AuditInputError
from .settings import (
    DEFAULT_FEATURES,
    DEFAULT_MAX_F1,
    DEVICE_CHOICES,
    FEATURE_CHOICES,
    THRESHOLD_POLICIES,
    parse_max_f1,
)

EXIT_PASS, EXIT_LEAK, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-privacy",
        description="Audit generated images for leaks of the real images they were trained on.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit = sub.add_parser(
        "audit",
        help="run the membership-inference audit and gate on the leakage F1",
        description="Exit status: 0 pass, 1 leakage F1 over the limit, 2 bad input or usage.",
    )
    audit.add_argument("--generated", required=True, type=Path, help="folder of generated images")
    audit.add_argument("--used", required=True, type=Path,
                       help="folder of real images the model was trained on (members)")
    audit.add_argument("--not-used", required=True, type=Path,
                       help="folder of real images it was not trained on (non-members)")
    audit.add_argument("--max-f1", type=parse_max_f1, default=DEFAULT_MAX_F1,
                       help=f"fail when the leakage F1 is over this (default {DEFAULT_MAX_F1})")
    audit.add_argument("--report", type=Path,
                       help="HTML report to write (default: ./gan-audit-report.html)")
    audit.add_argument("--json", type=Path,
                       help="JSON result to write (default: the report's path with .json)")
    audit.add_argument("--features", choices=FEATURE_CHOICES, default=DEFAULT_FEATURES,
                       help=f"image features (default {DEFAULT_FEATURES})")
    audit.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--threshold-policy", choices=THRESHOLD_POLICIES, default="prevalence")
    audit.add_argument("--folds", type=int, default=5)
    audit.add_argument("--checkpoint", type=Path,
                       help="local weights file for --features vit (safetensors or torch state dict)")
    audit.add_argument("--vit-model", default="vit_base_patch16_224",
                       help="timm model name matching --checkpoint")
    audit.add_argument("--batch-size", type=int, default=64)
    audit.add_argument("--workers", type=int, help="image decoding processes (default: spare cores)")
    audit.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def run(args: argparse.Namespace) -> int:
    from .audit import run_audit
    from .progress import ProgressPrinter
    from .report import DEFAULT_REPORT, default_json_path, write_outputs
    from .settings import AuditSettings

    report = args.report or Path(DEFAULT_REPORT)
    json_path = args.json or default_json_path(report)
    settings = AuditSettings(
        generated=args.generated, used=args.used, not_used=args.not_used,
        max_f1=args.max_f1, report=report, json=json_path, features=args.features,
        device=args.device, seed=args.seed, threshold_policy=args.threshold_policy,
        folds=args.folds, checkpoint=args.checkpoint, vit_model=args.vit_model,
        batch_size=args.batch_size, workers=args.workers,
    )
    progress = None if args.quiet else ProgressPrinter(sys.stderr.write, sys.stderr.isatty())
    result = run_audit(settings, progress)
    write_outputs(result, report, json_path, named_by_user=args.report is not None)
    print(result.summary())
    print(f"report: {report}\njson: {json_path}")
    return EXIT_PASS if result.passed else EXIT_LEAK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except AuditInputError as exc:
        print(f"gan-privacy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gan-privacy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
