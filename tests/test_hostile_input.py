"""Hostile and odd input, as a user meets it through `gan-privacy audit` and `predict`
with the defaults: every case ends in exit 0, 1 or 2 with a message that names the file
and the fix, never a traceback, never a header value or a group name, and no image is
left out without being named."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import (
    audit_args,
    garbage_after_marker,
    nifti_bomb,
    predict_args,
    predict_release,
    ramp,
    raw,
    release_as,
    rle_bomb,
)

from pytest_gan_privacy.cache import TensorCache
from pytest_gan_privacy.cli import main
from pytest_gan_privacy.synthetic import make_release, write_dicom, write_nifti

SECRET = "QQSECRET"  # every planted header value and group name starts so: none may be shown


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small clean PNG release that the cases below add one odd file to."""
    return make_release(
        tmp_path_factory.mktemp("base"), leaky=False, n_members=20, n_non_members=20,
        n_generated=40, seed=11,
    )  # fmt: skip


def with_file(base: Path, tmp_path: Path, name: str, make) -> Path:
    """A copy of the base release with one more file in real/used, made by `make(path)`."""
    release = tmp_path / "release"
    shutil.copytree(base, release)
    make(release / "real" / "used" / name)
    return release


# runs a command and prints its peak memory (KiB) last: a parent of its own, so that no
# other child of the test process is counted
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(f'PEAK {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
    "sys.exit(done.returncode)"
)


def audit(
    release: Path, out: Path, *more: str, process: bool = False
) -> tuple[int, str, str, dict | None]:
    """`gan-privacy audit` with the defaults: (status, stdout, stderr, JSON or None); in
    a process of its own with `process` (to measure its memory)."""
    json_path = out / "r.json"
    args = ["audit", *audit_args(release), *more, "--quiet"]
    args += ["--report", str(out / "r.html"), "--json", str(json_path)]
    if process:  # through a parent of its own, which reports the audit's peak memory
        done = subprocess.run(
            [sys.executable, "-c", PEAK, sys.executable, "-m", "pytest_gan_privacy.cli", *args],
            capture_output=True,
            text=True,
        )
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        stdout_io, stderr_io = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout_io), redirect_stderr(stderr_io):
            status = main(args)
        stdout, stderr = stdout_io.getvalue(), stderr_io.getvalue()
    data = json.loads(json_path.read_text()) if json_path.exists() else None
    return status, stdout, stderr, data


# --- odd DICOM headers ---------------------------------------------------------------------

HEADER_CASES = {
    # case: (the file's header, extra options, exit, what the message says)
    "empty window": ({"WindowCenter": "", "WindowWidth": ""}, [], 0, "percentile"),
    "text window centre": (
        {"WindowCenter": "QQSECRETWINDOW", "WindowWidth": "400"},
        [],
        2,
        "odd.dcm: its Window Center (0028,1050) is not a finite number",
    ),
    "NaN window centre": (
        {"WindowCenter": "NaN", "WindowWidth": "400"},
        [],
        2,
        "odd.dcm: its Window Center (0028,1050) is not a finite number",
    ),
    "text window centre, --window given": (
        {"WindowCenter": "QQSECRETWINDOW", "WindowWidth": "400"},
        ["--window=1000,2000"],
        0,
        "user",
    ),
    "infinite rescale intercept": (
        {"RescaleIntercept": "Inf", "RescaleSlope": "1"},
        [],
        2,
        "odd.dcm: its Rescale Intercept (0028,1052) is not a finite number",
    ),
    "text rescale slope": (
        {"RescaleSlope": "QQSECRETSLOPE", "RescaleIntercept": "0"},
        [],
        2,
        "odd.dcm: its Rescale Slope (0028,1053) is not a finite number",
    ),
    "empty rescale": ({"RescaleSlope": "", "RescaleIntercept": ""}, [], 0, "percentile"),
    "text VOI LUT function": (
        {"WindowCenter": "40", "WindowWidth": "400", "VOILUTFunction": "QQSECRETFUNCTION"},
        [],
        2,
        "odd.dcm: its VOI LUT Function (0028,1056) is none of LINEAR, LINEAR_EXACT, SIGMOID",
    ),
    "text window width": (
        {"WindowCenter": "40", "WindowWidth": "QQSECRETWIDTH"},
        [],
        2,
        "odd.dcm: its Window Width (0028,1051) is not a finite number",
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_odd_header_values_are_a_bad_file_or_a_documented_fallback(case, base, tmp_path):
    header, options, expected, says = HEADER_CASES[case]
    release = with_file(
        base, tmp_path, "odd.dcm", lambda p: raw(write_dicom(p, ramp(), PatientID="X"), **header)
    )
    status, out, err, data = audit(release, tmp_path / "out", *options)
    assert status == expected, err[-2000:]
    assert "Traceback" not in err and SECRET not in out + err
    if expected == 2:
        assert says in err
        # with --skip-bad-images the audit goes on, and names the file it left out
        status, out, err, data = audit(release, tmp_path / "skip", "--skip-bad-images")
        assert status == 0 and data is not None, err[-2000:]
        [left] = [item for item in data["left_out"] if item["image"] == "odd.dcm"]
        assert left["why"] == "unreadable" and says.split(": ", 1)[1] in left["detail"]
        assert "used 1 (1 unreadable)" in out
    else:
        assert data is not None and data["inputs"]["used"]["windowing"] == {says: 1}
        assert data["n_used"] == 21
    html = (tmp_path / ("out" if expected != 2 else "skip") / "r.html").read_text()
    assert SECRET not in html + json.dumps(data)


# --- files that claim more than they hold, and files that are not what they claim ------


BAD_FILES = {
    # case: (file name, maker, what the message says)
    "RLE DICOM claiming 60000 x 60000": (
        "bomb.dcm",
        rle_bomb,
        "bomb.dcm: too large: its header says its rows x columns x frames hold 3,600,000,000 "
        "pixels, over the limit of 268,435,456",
    ),
    "NIfTI claiming 1000^3 voxels": (
        "bomb.nii.gz",
        nifti_bomb,
        "bomb.nii.gz: too large: its header says its volume's voxels hold 1,000,000,000 pixels",
    ),
    "DICM marker, then garbage": ("garbage.dcm", garbage_after_marker, "garbage.dcm: "),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_named_early_with_bounded_memory(case, base, tmp_path):
    name, make, says = BAD_FILES[case]
    release = with_file(base, tmp_path, name, make)
    status, out, err, data = audit(release, tmp_path / "out", process=True)
    assert status == 2 and says in err and "Traceback" not in err, err[-2000:]
    peak_kib = int(err.split("PEAK ")[1].split()[0])
    assert peak_kib < 1_500_000, f"peak {peak_kib / 2**20:.2f} GiB"
    status, out, err, data = audit(release, tmp_path / "skip", "--skip-bad-images")
    assert status == 0 and [i["image"] for i in data["left_out"]] == [name]


def test_a_file_over_the_pixel_budget_is_read_once_the_limit_is_raised(base, tmp_path):
    def volume(path):
        write_nifti(path, np.arange(8 * 8 * 4, dtype=np.int16).reshape(8, 8, 4) + 1)

    release = with_file(base, tmp_path, "v.nii.gz", volume)
    status, _, err, _ = audit(release, tmp_path / "low", "--max-pixels", "200")
    assert status == 2 and "v.nii.gz: too large" in err and "--max-pixels" in err
    status, _, err, data = audit(release, tmp_path / "ok", "--max-pixels", "256")
    assert status == 0 and data["n_used"] == 24, err[-2000:]


# --- no header value and no group name in any output ---------------------------------

PLANTED = {  # DICOM attributes that hold text, each set to a distinctive string
    keyword: f"{SECRET}-{keyword[:8].upper()}"
    for keyword in (
        "PatientName",
        "OtherPatientIDs",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "StudyDescription",
        "SeriesDescription",
        "StudyID",
        "ProtocolName",
        "StationName",
        "DeviceSerialNumber",
        "Manufacturer",
        "ManufacturerModelName",
        "PatientComments",
        "ImageComments",
        "AdditionalPatientHistory",
    )
}


def everything_written(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def groups_file(release: Path, roles=("used", "not_used"), rows: list[str] | None = None) -> Path:
    """A groups CSV giving every real image a planted group name, two images a patient."""
    lines = rows or [
        f"{role}/{path.name},{SECRET}-GROUP-{role}-{i // 2}"
        for role in roles
        for i, path in enumerate(sorted((release / "real" / role).iterdir()))
    ]
    path = release / "real" / "groups.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_header_value_or_group_name_reaches_any_output(base, tmp_path, pytester):
    """Distinctive strings in every text attribute of DICOM files, in NIfTI headers and in
    a groups file; every output, the error paths' included, is searched for them."""
    dicom = release_as("dicom-multiframe", base, tmp_path / "dicom", **PLANTED)
    nifti = release_as("nifti", base, tmp_path / "nifti")
    for volume in nifti.rglob("*.nii.gz"):
        image = nib.load(volume)
        image.header["descrip"] = f"{SECRET}-NIFTI".encode()
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header), volume)
    png = tmp_path / "png"
    shutil.copytree(base, png)
    groups = groups_file(png)
    outputs = tmp_path / "outputs"
    said = []

    def run(release: Path, name: str, *more: str) -> int:
        status, out, err, _ = audit(release, outputs / name, *more)
        said.append(out + err)
        assert "Traceback" not in err, err[-2000:]
        return status

    # a verdict either way writes every output; a clean release of 5 patients a side can
    # cross the limit by chance (its F1's interval spans it)
    assert run(dicom, "dicom") in (0, 1)
    assert run(nifti, "nifti") in (0, 1)
    assert run(png, "groups", "--groups", str(groups)) in (0, 1)
    # error paths: a patient in both folders (DICOM, groups), a groups file's bad lines
    both = tmp_path / "both"
    shutil.copytree(dicom, both)
    moved = sorted((both / "real" / "used").iterdir())[0]
    shutil.copy(moved, both / "real" / "not_used" / "moved.dcm")
    assert run(both, "both") == 2
    rows = groups.read_text().splitlines()
    same = [*rows[:-1], rows[-1].rsplit(",", 1)[0] + "," + rows[0].rsplit(",", 1)[1]]
    for name, lines in {
        "same group": same,
        "listed twice": [*rows, rows[0].rsplit(",", 1)[0] + f",{SECRET}-OTHER"],
        "three cells": [*rows, f"used/x.png,{SECRET}-A,{SECRET}-B"],
        "one cell": [*rows, f"{SECRET}-ALONE"],
    }.items():
        assert run(png, name, "--groups", str(groups_file(png, rows=lines))) == 2, name
    groups_file(png)
    # a file with planted attributes that cannot be decoded, stopped on and skipped
    broken = tmp_path / "broken"
    shutil.copytree(dicom, broken)
    victim = sorted((broken / "generated").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-300])
    assert run(broken, "broken") == 2
    assert run(broken, "broken-skipped", "--skip-bad-images") == 0, said[-1][-3000:]
    # predict: development images and candidates with planted groups
    release = tmp_path / "predict"
    predict_release(release, leaky=True, n=24)
    groups = groups_file(release)
    groups.write_text(
        groups.read_text()
        + "".join(
            f"../candidates/{p.name},{SECRET}-CAND-{i}\n"
            for i, p in enumerate(sorted((release / "candidates").iterdir()))
        )
    )
    out = outputs / "predict"
    args = [*predict_args(release, out / "p.csv"), "--groups", str(groups), "--quiet"]
    args += ["--scores", str(out / "s.csv"), "--json", str(out / "p.json")]
    stdout_io, stderr_io = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout_io), redirect_stderr(stderr_io):
        assert main(args) == 0
    said.append(stdout_io.getvalue() + stderr_io.getvalue())
    # pytest: the terminal summary and JUnit XML
    result = pytester.runpytest(
        "--gan-audit",
        f"--gan-audit-generated={dicom / 'generated'}",
        f"--gan-audit-used={dicom / 'real' / 'used'}",
        f"--gan-audit-not-used={dicom / 'real' / 'not_used'}",
        f"--gan-audit-report={outputs / 'pytest' / 'r.html'}",
        f"--junitxml={outputs / 'junit.xml'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    said.append(str(result.stdout) + str(result.stderr))
    written = everything_written(outputs)
    assert {"r.html", "r.json", "p.csv", "s.csv", "p.json", "junit.xml"} <= {
        p.name for p in outputs.rglob("*")
    }
    for text in [*said, written]:
        assert SECRET not in text, text[max(0, text.find(SECRET) - 300) : text.find(SECRET) + 100]


# --- the groups file -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("../../etc/passwd,p1", "lists 1 file(s) outside the used and not_used folders"),
        ("/etc/hostname,p1", "lists 1 file(s) outside the used and not_used folders"),
        ("used/gone.png,p1", "lists 1 file(s) in the used folder"),
    ],
)
def test_every_line_of_a_groups_file_must_name_an_image_of_the_folders(line, says, base, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(base, release)
    groups = groups_file(release)
    groups.write_text(groups.read_text() + line + "\n")
    status, _, err, _ = audit(release, tmp_path / "out", "--groups", str(groups))
    number = len(groups.read_text().splitlines())
    assert status == 2 and says in err and f"line {number}: " in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("kind", ["/dev/null", "fifo"])
def test_a_groups_path_that_is_no_regular_file_says_so(kind, base, tmp_path):
    path = Path(kind)
    if kind == "fifo":
        path = tmp_path / "groups.csv"
        os.mkfifo(path)
    status, _, err, _ = audit(base, tmp_path / "out", "--groups", str(path))
    assert status == 2 and "is not a regular file (a folder, a pipe or a device)" in err, err


# --- predict's files -------------------------------------------------------------------


def predict_run(release: Path, out: Path, *more: str) -> tuple[int, str, str]:
    stdout_io, stderr_io = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout_io), redirect_stderr(stderr_io):
        status = main([*predict_args(release, out), "--features", "pixels", "--quiet", *more])
    return status, stdout_io.getvalue(), stderr_io.getvalue()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    release = tmp_path_factory.mktemp("predict")
    predict_release(release, leaky=True, n=24)
    return release


def test_a_file_named_like_a_frame_of_another_is_refused(predicted, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(predicted, release)
    frames = np.stack([ramp() + i for i in range(2)])
    write_dicom(release / "candidates" / "scan", frames, PatientID="A")
    write_dicom(release / "candidates" / "scan#1", ramp() + 7, PatientID="B")
    status, _, err = predict_run(release, tmp_path / "p.csv")
    assert status == 2 and "two images of the candidates folder have the name scan#1" in err, err
    assert "Rename the file" in err


def test_names_with_line_breaks_read_back_and_formula_names_are_warned(predicted, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(predicted, release)
    odd = ["a\rb.png", "c\nd.png", "=1+2.png", "@x.png", "-y.png", "+z.png"]
    for name, path in zip(odd, sorted((release / "candidates").iterdir()), strict=False):
        path.rename(release / "candidates" / name)
    out = tmp_path / "p.csv"
    status, stdout, err = predict_run(release, out)
    assert status == 0, err
    with open(out, newline="") as f:
        names = [row[0] for row in csv.reader(f)]
    assert set(odd) <= set(names) and len(names) == 24
    assert "4 candidate name(s) begin with =, +, -, @ or a tab" in stdout
    assert "open the CSV as text, or rename those files" in stdout


@pytest.mark.parametrize(
    ("flag", "example"), [("--out", "predictions.csv"), ("--scores", "scores.csv")]
)
def test_an_output_that_names_a_folder_suggests_a_file_of_its_kind(
    flag, example, predicted, tmp_path
):
    status, _, err = predict_run(predicted, tmp_path / "p.csv", flag, str(tmp_path))
    assert status == 2 and f"is a folder: give a file name, e.g. {tmp_path / example}" in err


# --- the smaller things ----------------------------------------------------------------


def test_collect_only_says_that_nothing_was_audited(pytester, base):
    result = pytester.runpytest(
        "--gan-audit",
        f"--gan-audit-generated={base / 'generated'}",
        f"--gan-audit-used={base / 'real' / 'used'}",
        f"--gan-audit-not-used={base / 'real' / 'not_used'}",
        "--collect-only",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--collect-only: no audit ran, so nothing was checked*"])


def test_a_cache_folder_that_cannot_be_entered_warns_and_the_run_goes_on(tmp_path, monkeypatch):
    """As a read-only cache does (root enters any folder: the refusal is simulated)."""
    cache = TensorCache(tmp_path / "cache")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", refused)
    monkeypatch.setattr(Path, "read_bytes", refused)
    assert not cache.exists("features", "ab" * 32)
    assert cache.get("features", "ab" * 32) is None
    cache.put("features", "ab" * 32, {})
    [warning] = cache.warnings
    assert "cannot be read (Permission denied)" in warning and "--cache-dir" in warning


TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed")
def test_under_torchrun_bad_input_is_told_apart_from_a_fail(base, tmp_path):
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "--no-python", "gan-privacy"]
    cmd += ["audit", *audit_args(base), "--folds", "50", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # torchrun's, whatever the process's
    lines = done.stderr.splitlines()
    assert "gan-privacy: exit 2 (bad input or usage)" in lines
    assert "traceback : gan-privacy: exit 2 (bad input or usage): " in done.stderr


def test_under_torchrun_a_fail_says_so_in_torchruns_error_file(tmp_path, monkeypatch, capsys):
    from pytest_gan_privacy.cli import EXIT_LEAK, _tell_torchrun

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    _tell_torchrun(EXIT_LEAK, "")
    assert capsys.readouterr().err == "gan-privacy: exit 1 (FAIL: the gate found a leak)\n"
    error = json.loads((tmp_path / "error.json").read_text())
    assert error["message"]["message"] == "gan-privacy: exit 1 (FAIL: the gate found a leak)"
