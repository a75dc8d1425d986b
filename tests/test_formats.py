"""Every input format through `gan-privacy audit` with the defaults, cache on: cold,
then warm from the cache, with the same numbers (the default path is the tested path).

One synthetic release is written in each format, every role alike; files of several
images (multi-frame DICOM, NIfTI volumes) hold a patient's slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import audit_args, release_as

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.synthetic import make_release

FORMATS = {  # format -> the options it needs beside the three paths
    "png": [],
    "jpeg": [],
    "tiff-16": [],
    "dicom": [],
    "dicom-multiframe": [],
    "dicom-rle": [],
    "dicom-jpeg": [],
    "dicom-jpeg2000": [],
    "nifti": [],
    "nifti-4d": ["--volume", "1"],
}


@pytest.fixture(scope="module")
def release_png(tmp_path_factory) -> Path:
    return make_release(
        tmp_path_factory.mktemp("png"),
        leaky=True,
        n_members=24,
        n_non_members=24,
        n_generated=72,
        seed=5,
    )


def _numbers(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {
        "verdict": data["verdict"],
        "counts": (data["n_generated"], data["n_used"], data["n_not_used"]),
        "attacks": {name: (a["auc"], a["f1"]) for name, a in data["attacks"].items()},
        "scores": {row["sha256"]: row["attack_scores"] for row in data["candidates"]},
        "near_copies": data["near_copies"]["count"],
        "power": data["power_check"],
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_audits_cold_then_warm_with_the_same_numbers(
    fmt, release_png, tmp_path, monkeypatch, capsys
):
    release = release_png
    if fmt != "png":
        release = release_as(fmt, release_png, tmp_path / fmt)
    monkeypatch.setenv("GAN_PRIVACY_CACHE_DIR", str(tmp_path / "cache"))  # cold
    runs = []
    for run in ("cold", "warm"):
        out = tmp_path / run
        status = main(
            ["audit", *audit_args(release), *FORMATS[fmt], "--quiet"]
            + ["--report", str(out / "r.html"), "--json", str(out / "r.json")]
        )
        text = capsys.readouterr()
        assert status in (0, 1), text.err[-2000:]
        assert "Traceback" not in text.err
        runs.append(json.loads((out / "r.json").read_text()))
    cold, warm = runs
    assert cold["cache"]["hits"] == 0 and warm["cache"]["misses"] == 0, warm["cache"]
    assert _numbers(tmp_path / "cold" / "r.json") == _numbers(tmp_path / "warm" / "r.json")
    assert cold["n_used"] == cold["n_not_used"] == 24 and cold["n_generated"] == 72
    windowed = cold["inputs"]["used"]["windowing"]
    if fmt.startswith(("dicom", "nifti")):
        assert sum(windowed.values()) == 24, windowed
        assert cold["membership_unit"] == "patient"
    else:
        assert windowed == {}
    assert cold["verdict"] == "FAIL"  # the generator memorised its members
