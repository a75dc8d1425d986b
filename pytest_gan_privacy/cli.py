"""The command line: `gan-privacy audit`, the same audit as under pytest, and
`gan-privacy predict`, which calls unlabelled images used or not (predict.py).

Exit status: 0 the leakage F1 is within the limit, 1 it is over, 2 bad input or usage
(said in one message, never a traceback), 3 the audit itself failed (a bug: the
traceback is printed; 1 would read as a leak).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING
from pathlib import Path

from . import __version__
from .errors import AuditInputError
from .settings import OPTIONS, PREDICT_OPTIONS, PREDICT_SHARED

EXIT_PASS, EXIT_LEAK, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
DEFAULT_REPORT = "gan-audit-report.html"
METAVARS = {"folder": "FOLDER", "file": "FILE", "output": "FILE", "output_folder": "FOLDER"}


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
        description="Exit status: 0 pass, 1 leakage F1 over the limit, 2 bad input or "
        "usage, 3 the audit failed (a bug).",
    )
    add_options(audit, OPTIONS)
    audit.add_argument("--quiet", action="store_true", help="no progress lines")
    predict = sub.add_parser(
        "predict",
        help="predict which unlabelled real images trained the model (ImageCLEFmed GANs)",
        description="From a labelled development set (--used, --not-used), call each image "
        "of --candidates used (1) or not (0). Exit status: 0 written, 2 bad input or usage, "
        "3 it failed (a bug).",
    )
    add_options(predict, [o for o in OPTIONS if o.name in PREDICT_SHARED] + list(PREDICT_OPTIONS))
    predict.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def add_options(parser: argparse.ArgumentParser, options) -> None:
    """One flag per option of the settings table (settings.OPTIONS)."""
    for option in options:
        kwargs: dict = {"dest": option.name, "help": option.describe()}
        if option.kind == "bool":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs.update(type=option.parse, default=None, required=option.default is MISSING)
            if option.choices:
                kwargs["metavar"] = "{" + ",".join(option.choices) + "}"
            elif option.kind in METAVARS:
                kwargs["metavar"] = METAVARS[option.kind]
        parser.add_argument(f"--{option.flag}", **kwargs)


def run(args: argparse.Namespace) -> int:
    from .files import cache_folder, check_cache_folder, check_outputs
    from .settings import AuditSettings, check_input_paths

    given = {o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name) is not None}
    # a path the user named is theirs to replace; a default one only if we wrote it
    named = [given[k] for k in ("report", "json") if k in given]
    given.setdefault("report", Path(DEFAULT_REPORT))
    given.setdefault("json", given["report"].with_suffix(".json"))
    settings = AuditSettings(**given)
    outputs = (settings.report, settings.json)
    # before any work (and before torch loads): the inputs make sense, and no output
    # can harm them, replace the other, or fail to be written after the audit
    check_input_paths(settings)
    check_outputs(
        [
            (settings.report, settings.report in named, "report"),
            (settings.json, settings.json in named, "JSON"),
        ],
        settings.inputs(),
    )
    folder = cache_folder(settings)
    if folder is not None:
        check_cache_folder(folder, settings.inputs())

    from .audit import run_audit
    from .report import write_outputs
    from .results import summary_lines
    from .runtime import ProgressPrinter

    progress = None if args.quiet else ProgressPrinter(sys.stderr.write, sys.stderr.isatty())
    result = run_audit(settings, progress)
    write_outputs(result, *outputs, named=named)
    print("\n".join(summary_lines(result)))
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"report: {settings.report}\njson: {settings.json}")
    return EXIT_PASS if result.passed else EXIT_LEAK


def predict(args: argparse.Namespace) -> int:
    """`gan-privacy predict`: the calls, the scores and the JSON where asked."""
    from .files import check_outputs
    from .settings import AuditSettings, PredictSettings, check_predict_paths

    def given(names) -> dict:
        return {n: getattr(args, n) for n in names if getattr(args, n) is not None}

    settings = PredictSettings(
        audit=AuditSettings(**given(PREDICT_SHARED)),
        **given(o.name for o in PREDICT_OPTIONS),
    )
    # before any work: the inputs make sense and no output can harm them (all three are
    # paths the user named, so they may replace files of theirs)
    check_predict_paths(settings)
    check_outputs(
        [
            (settings.out, True, "predictions"),
            (settings.scores, True, "scores"),
            (settings.json, True, "JSON"),
        ],
        settings.inputs(),
    )
    from .predict import run_predict, summary_lines, write_outputs
    from .runtime import ProgressPrinter

    progress = None if args.quiet else ProgressPrinter(sys.stderr.write, sys.stderr.isatty())
    prediction = run_predict(settings, progress)
    write_outputs(prediction)
    print("\n".join(summary_lines(prediction)))
    for warning in prediction.warnings:
        print(f"warning: {warning}")
    written = [("predictions", settings.out), ("scores", settings.scores), ("json", settings.json)]
    print("\n".join(f"{what}: {path}" for what, path in written if path is not None))
    return EXIT_PASS


COMMANDS = {"audit": run, "predict": predict}


def main(argv: list[str] | None = None) -> int:
    from .runtime import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads (runtime.py: shared CPUs)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AuditInputError as exc:
        print(f"gan-privacy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gan-privacy: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "gan-privacy: error: out of memory; lower --batch-size and --workers, or audit "
            "on a machine with more memory",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except OSError as exc:  # the file system refused: a full disk, a name too long...
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"gan-privacy: error: {exc.strerror or exc}{where}; check that path and the free space",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - a bug: say so, and never exit 1 (a leak)
        import traceback

        traceback.print_exc()
        print(
            "gan-privacy: internal error: the audit failed (a bug in pytest-gan-privacy, "
            "not in your data); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
