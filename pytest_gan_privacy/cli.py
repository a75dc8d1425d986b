"""The command line: `gan-privacy audit`, the same audit as under pytest, and
`gan-privacy predict`, which calls unlabelled images used or not (predict.py).

Exit status: 0 the leakage F1 is within the limit, 1 it is over, 2 bad input or usage
(said in one message, never a traceback), 3 the audit itself failed (a bug: the
traceback is printed; 1 would read as a leak).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import AuditInputError
from .settings import DEFAULT_REPORT, OPTIONS, PREDICT_OPTIONS, PREDICT_SHARED, OutputKind

EXIT_PASS, EXIT_LEAK, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
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
            kwargs.update(type=option.parse, default=None, required=option.needed)
            if option.choices:
                kwargs["metavar"] = "{" + ",".join(option.choices.values()) + "}"
            elif option.kind in METAVARS:
                kwargs["metavar"] = METAVARS[option.kind]
        parser.add_argument(f"--{option.flag}", **kwargs)


def run(args: argparse.Namespace) -> int:
    from .files import cache_folder, check_cache_folder, check_outputs
    from .settings import AuditSettings, check_input_paths

    given = {o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name) is not None}
    # a path the user named is theirs to replace; a default one only if we wrote it
    named = [given[k] for k in ("report", "json", "summary_md") if k in given]
    given.setdefault("report", Path(DEFAULT_REPORT))
    given.setdefault("json", given["report"].with_suffix(".json"))
    settings = AuditSettings(**given)
    # before any work (and before torch loads): the inputs make sense, and no output
    # can harm them, replace the other, or fail to be written after the audit
    check_input_paths(settings)
    check_outputs(
        [
            (settings.report, settings.report in named, OutputKind.REPORT),
            (settings.json, settings.json in named, OutputKind.JSON),
            (settings.summary_md, True, OutputKind.SUMMARY),
        ],
        settings.inputs(),
    )
    folder = cache_folder(settings)
    if folder is not None:
        check_cache_folder(folder, settings.inputs())

    from .distributed import world_from_env
    from .pipeline import run_audit
    from .report import write_outputs
    from .results import result_json, summary_lines
    from .runtime import ProgressPrinter
    from .summary import append_to_job_summary, summary_markdown

    quiet = args.quiet or not world_from_env().main  # under torchrun rank 0 speaks
    progress = None if quiet else ProgressPrinter(sys.stderr.write, sys.stderr.isatty())
    result = run_audit(settings, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 writes the outputs
        return EXIT_PASS
    write_outputs(result, settings.report, settings.json, named, settings.summary_md)
    append_to_job_summary(summary_markdown(result_json(result), str(settings.report)))
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
            (settings.out, True, OutputKind.PREDICTIONS),
            (settings.scores, True, OutputKind.SCORES),
            (settings.json, True, OutputKind.JSON),
        ],
        settings.inputs(),
    )
    from .prediction import run_predict, summary_lines, write_outputs
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


MEANINGS = {
    EXIT_PASS: "PASS, or written",
    EXIT_LEAK: "FAIL: the gate found a leak",
    EXIT_USAGE: "bad input or usage",
    EXIT_INTERNAL: "internal error",
}


def main(argv: list[str] | None = None) -> int:
    from .runtime import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads (runtime.py: shared CPUs)
    args = build_parser().parse_args(argv)
    status, message = _run_command(args)
    _tell_torchrun(status, message)
    return status


def _tell_torchrun(status: int, message: str) -> None:
    """Under torchrun, which exits 1 whenever a process fails, say which way this one
    ended: a last line "gan-privacy: exit N (...)" on the main process, and, for a
    failure, the same words in torchrun's error file, which its "Root Cause" shows."""
    import json
    import os
    import time

    from .distributed import world_from_env

    world = world_from_env()
    if not world.distributed:
        return
    words = f"gan-privacy: exit {status} ({MEANINGS.get(status, 'interrupted')})"
    if world.main:
        print(words, file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if status != EXIT_PASS and error_file:
        text = f"{words}: {message}" if message else words
        info = {"py_callstack": text, "timestamp": str(int(time.time()))}
        try:
            with open(error_file, "w") as f:
                json.dump({"message": {"message": text, "extraInfo": info}}, f)
        except OSError:
            pass  # torchrun then shows its own words


def _run_command(args: argparse.Namespace) -> tuple[int, str]:
    """The command's exit status, and the first line of what went wrong (or "")."""
    try:
        return COMMANDS[args.command](args), ""
    except AuditInputError as exc:
        print(f"gan-privacy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE, str(exc).splitlines()[0]
    except KeyboardInterrupt:
        print("gan-privacy: interrupted", file=sys.stderr)
        return 130, "interrupted"
    except MemoryError:
        message = (
            "out of memory; lower --batch-size and --workers, or audit on a machine with more "
            "memory"
        )
        print(f"gan-privacy: error: {message}", file=sys.stderr)
        return EXIT_USAGE, message
    except OSError as exc:  # the file system refused: a full disk, a name too long...
        where = f" ({exc.filename})" if exc.filename else ""
        message = f"{exc.strerror or exc}{where}; check that path and the free space"
        print(f"gan-privacy: error: {message}", file=sys.stderr)
        return EXIT_USAGE, message
    except Exception as exc:  # noqa: BLE001 - a bug: say so, and never exit 1 (a leak)
        import traceback

        traceback.print_exc()
        print(
            "gan-privacy: internal error: the audit failed (a bug in pytest-gan-privacy, "
            "not in your data); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL, type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
