"""Hostile and odd input, as a user meets it through `gan-privacy audit` and `predict`
with the defaults: every case ends in exit 0, 1 or 2 with a message that names the file
and the fix, never a traceback, never a header value or a group name, and no image is
left out without being named."""

from __future__ import annotations

import io
import json
import resource
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import audit_args
from pydicom.datadict import tag_for_keyword
from pydicom.uid import RLELossless

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


def raw(path: Path, **attributes: str) -> Path:
    """Set attributes of a DICOM file to any text of up to 16 characters, as a broken
    exporter writes them: each is written as a placeholder of its VR, whose bytes are
    then replaced (pydicom itself refuses to write such values)."""
    ds = pydicom.dcmread(path)
    swaps = []
    for n, (keyword, text) in enumerate(attributes.items(), start=1):
        vr = pydicom.datadict.dictionary_VR(tag_for_keyword(keyword))
        placeholder = f"-{n}{n * 7:06d}.{n * 13:07d}" if vr == "DS" else chr(64 + n) * 16
        setattr(ds, keyword, placeholder)
        swaps.append((placeholder.encode(), text.ljust(16).encode()))
    ds.save_as(path)
    data = path.read_bytes()
    for placeholder, text in swaps:
        assert data.count(placeholder) == 1
        data = data.replace(placeholder, text)
    path.write_bytes(data)
    return path


def ramp() -> np.ndarray:
    r, c = np.mgrid[:32, :32]
    return ((r * 131 + c * 17) % 4000).astype(np.uint16)


def audit(
    release: Path, out: Path, *more: str, process: bool = False
) -> tuple[int, str, str, dict | None]:
    """`gan-privacy audit` with the defaults: (status, stdout, stderr, JSON or None); in
    a process of its own with `process` (to measure its memory)."""
    json_path = out / "r.json"
    args = ["audit", *audit_args(release), *more, "--quiet"]
    args += ["--report", str(out / "r.html"), "--json", str(json_path)]
    if process:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_gan_privacy.cli", *args], capture_output=True, text=True
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


def rle_bomb(path: Path) -> Path:
    """A small RLE DICOM whose header says 60,000 x 60,000 pixels (3.6 billion)."""
    write_dicom(path, np.zeros((8, 8), np.uint16), syntax=RLELossless, PatientID="X")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60_000
    ds.save_as(path)
    return path


def nifti_bomb(path: Path) -> Path:
    """A .nii.gz whose header says 1000 x 1000 x 1000 voxels, a few bytes of them given."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4), header)
    nib.save(image, path)  # written as 2 x 2 x 2, then the header claims the rest
    data = bytearray(nib.openers.Opener(path).read())
    data[40:56] = np.array([3, 1000, 1000, 1000, 1, 1, 1, 1], "<i2").tobytes()
    with nib.openers.Opener(path, "wb") as f:
        f.write(bytes(data))
    return path


def garbage_after_marker(path: Path) -> Path:
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(2000))
    return path


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    status, out, err, data = audit(release, tmp_path / "out", process=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert status == 2 and says in err and "Traceback" not in err, err[-2000:]
    if peak_kib > before:  # this run set the children's peak: it is this run's
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
