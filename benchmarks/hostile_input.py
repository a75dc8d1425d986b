"""Odd and hostile input as a user meets it: each case through `gan-privacy audit` (or
predict, pytest, torchrun) with the defaults, in a process of its own; prints the exit
status, the first line of what it says, and the process's peak memory.

    python benchmarks/hostile_input.py [--only NAME ...] [--keep DIR] [--package CHECKOUT]

The cases are small synthetic releases (phantoms) with one odd file or setting each;
the size bombs are real: an RLE DICOM whose header says 60,000 x 60,000 pixels, and a
gzip of a 1000^3 volume of zeros (about 1 MB on disk, 1 GB decoded). Tests keep each
case fixed (tests/test_hostile_input.py, test_formats.py, test_fuzz.py); this prints the
table for a reader.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import (  # noqa: E402 - the tests' makers of releases and hostile files
    audit_args,
    garbage_after_marker,
    ramp,
    raw,
    release_as,
    rle_bomb,
)

from pytest_gan_privacy.synthetic import make_release, write_dicom  # noqa: E402

# the peak memory of one command, measured by a parent of its own
PEAK = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr); "
    "print(f'PEAK {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
    "sys.exit(done.returncode)"
)
CLI = [sys.executable, "-m", "pytest_gan_privacy.cli"]


def real_nifti_bomb(path: Path) -> Path:
    """A .nii.gz of a 1000 x 1000 x 1000 uint8 volume of zeros, written as a stream."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    zeros = bytes(10**7)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0" * 4)  # the header and an empty extension
        for _ in range(100):
            f.write(zeros)
    return path


def copy_with(base: Path, work: Path, name: str, make) -> Path:
    release = work / name.replace(" ", "-").replace("/", "-")
    shutil.copytree(base, release)
    make(release)
    return release


def run(command: list[str], out: Path) -> tuple[int, str, float]:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command], capture_output=True, text=True, cwd=out
    )
    peak = next(
        int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK ")
    )
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, first_words(lines, done.stderr), peak / 1024


def first_words(lines: list[str], stderr: str) -> str:
    """What a reader looks at first: torchrun's exit line, the error (the line naming the
    file when the first says files could not be read), the verdict, or the first line."""
    for marker in ("gan-privacy: exit", "error:", "PASS", "FAIL", "--collect-only", "predicted"):
        for i, line in enumerate(lines):
            if marker in line:
                if "could not be read" in line and i + 1 < len(lines):
                    line = lines[i + 1]
                break
        else:
            continue
        break
    else:
        line = lines[0] if lines else ""
    ours = "pytest_gan_privacy" in stderr and "Traceback" in stderr
    return ("TRACEBACK: " if ours else "") + line


def audit_case(release: Path, *more: str) -> list[str]:
    return [*CLI, "audit", *audit_args(release), *more, "--quiet"]


def groups_case(release: Path, extra_line: str) -> list[str]:
    rows = [
        f"{role}/{p.name},patient-{role}-{i // 2}"
        for role in ("used", "not_used")
        for i, p in enumerate(sorted((release / "real" / role).glob("*.png")))
    ]
    groups = release / "real" / "groups.csv"
    groups.write_text("\n".join([*rows, extra_line]) + "\n")
    return audit_case(release, "--groups", str(groups))


def cases(base: Path, work: Path) -> dict[str, list[str]]:
    """Case name -> the command that runs it."""
    out: dict[str, list[str]] = {}
    used = Path("real/used")

    def odd(name: str, make, *more: str) -> None:
        release = copy_with(base, work, name, make)
        out[name] = audit_case(release, *more)

    for fmt in ("nifti", "nifti-4d", "dicom-multiframe", "dicom-jpeg", "dicom-rle"):
        release = release_as(fmt, base, work / fmt)
        out[f"{fmt} release, defaults, cache on"] = audit_case(
            release, *(["--volume", "1"] if fmt == "nifti-4d" else [])
        )
    header_cases = {
        "empty WindowCenter / Width": {"WindowCenter": "", "WindowWidth": ""},
        "non-numeric WindowCenter": {"WindowCenter": "ABC", "WindowWidth": "400"},
        "WindowCenter NaN": {"WindowCenter": "NaN", "WindowWidth": "400"},
        "WindowCenter Inf": {"WindowCenter": "Inf", "WindowWidth": "400"},
        "non-numeric RescaleSlope": {"RescaleSlope": "ABC", "RescaleIntercept": "0"},
        "RescaleIntercept Inf": {"RescaleSlope": "1", "RescaleIntercept": "Inf"},
        "empty RescaleSlope / Intercept": {"RescaleSlope": "", "RescaleIntercept": ""},
    }
    for name, header in header_cases.items():

        def make(release, header=header):
            raw(write_dicom(release / used / "odd.dcm", ramp(), PatientID="X"), **header)

        odd(name, make)
    odd("non-numeric RescaleSlope, --skip-bad-images", lambda r: raw(
        write_dicom(r / used / "odd.dcm", ramp(), PatientID="X"), RescaleSlope="ABC"
    ), "--skip-bad-images")  # fmt: skip
    odd("RLE DICOM, header 60000 x 60000", lambda r: rle_bomb(r / used / "bomb.dcm"))
    odd("1000^3 zero NIfTI .nii.gz (1 MB)", lambda r: real_nifti_bomb(r / used / "zeros.nii.gz"))
    odd("'DICM' then garbage (.dcm)", lambda r: garbage_after_marker(r / used / "g.dcm"))
    odd("--max-pixels 10", lambda r: rle_bomb(r / used / "bomb.dcm"), "--max-pixels", "10")
    for name, line in {
        "groups: a file listed twice, two groups": "used/{first},other-group",
        "groups: a row of three cells": "used/x.png,a,b",
        "groups: ../../etc/passwd": "../../etc/passwd,p9",
        "groups: an absolute path": "/etc/hostname,p9",
        "groups: a file that does not exist": "used/gone.png,p9",
    }.items():
        release = copy_with(base, work, name, lambda r: None)
        first = sorted((release / used).glob("*.png"))[0].name
        out[name] = groups_case(release, line.format(first=first))
    out["--groups /dev/null"] = audit_case(base, "--groups", "/dev/null")
    fifo = work / "groups.fifo"
    os.mkfifo(fifo)
    out["--groups FIFO"] = audit_case(base, "--groups", str(fifo))
    predict = copy_with(base, work, "predict", lambda r: (r / "candidates").mkdir())
    for i, path in enumerate(sorted((predict / used).glob("*.png"))[:10]):
        name = ["=1+2.png", "a\rb.png"][i] if i < 2 else path.name
        path.rename(predict / "candidates" / name)
    predict_cmd = [
        *CLI,
        "predict",
        *audit_args(predict),
        "--candidates",
        str(predict / "candidates"),
    ]
    out["predict: '=1+2' and CR names"] = [*predict_cmd, "--out", "p.csv", "--quiet"]
    out["predict --out FOLDER"] = [*predict_cmd, "--out", str(work), "--quiet"]
    clash = copy_with(base, work, "clash", lambda r: None)
    (clash / "candidates").mkdir()
    write_dicom(clash / "candidates" / "scan", np.stack([ramp(), ramp() + 1]), PatientID="A")
    write_dicom(clash / "candidates" / "scan#1", ramp() + 7, PatientID="B")
    out["predict: 'scan#1' beside 2-frame 'scan'"] = [
        *CLI, "predict", *audit_args(clash), "--candidates", str(clash / "candidates"),
        "--out", "p.csv", "--quiet",
    ]  # fmt: skip
    out["pytest --gan-audit --collect-only"] = [
        sys.executable, "-m", "pytest", "--gan-audit", "--collect-only", "-q", "-p",
        "no:cacheprovider", f"--gan-audit-generated={base / 'generated'}",
        f"--gan-audit-used={base / used}", f"--gan-audit-not-used={base / 'real/not_used'}",
    ]  # fmt: skip
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out["torchrun, bad input (--folds 50)"] = [
        torchrun, "--standalone", "--nproc-per-node", "2", "--no-python", "gan-privacy",
        "audit", *audit_args(base), "--folds", "50", "--quiet",
    ]  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="cases whose names contain these words")
    parser.add_argument("--keep", type=Path, help="keep the inputs and outputs here")
    parser.add_argument(
        "--package",
        type=Path,
        help="run the cases on the pytest_gan_privacy in this checkout (e.g. an older "
        "commit's worktree, for a before/after table)",
    )
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="hostile-"))
    os.environ["GAN_PRIVACY_CACHE_DIR"] = str(work / "cache")  # a cache of this run's own
    if args.package:  # the commands run (not this script) import that checkout's package
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(args.package.resolve()), os.environ.get("PYTHONPATH", "")]
        )
    base = make_release(
        work / "base", leaky=False, n_members=24, n_non_members=24, n_generated=48, seed=3
    )
    print("| case | exit | first line of what it says | peak memory (MiB) |")
    print("|---|---|---|---|")
    for name, command in cases(base, work).items():
        if args.only and not any(word in name for word in args.only):
            continue
        status, said, peak = run(command, work / "out" / str(abs(hash(name))))
        said = said.replace("|", "\\|").replace(str(work), "…")
        print(f"| {name} | {status} | {said[:160]} | {peak:,.0f} |", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"work": str(work)}) if args.keep else "")


if __name__ == "__main__":
    main()
