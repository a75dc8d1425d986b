"""Patients, the orientation check and the privacy of patient labels (issue 13)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import audit_args, settings_for
from PIL import Image

from pytest_gan_privacy import loading
from pytest_gan_privacy.cli import main
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.metrics import bootstrap_f1_interval, stratified_folds
from pytest_gan_privacy.nearcopies import pick_canaries
from pytest_gan_privacy.orientation import ORIENTATIONS, Orientation, check_orientation, orient
from pytest_gan_privacy.patients import PATIENT_SCORE_RULES, candidate_patients
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.privacy import patient_labels
from pytest_gan_privacy.report import write_outputs
from pytest_gan_privacy.results import result_json
from pytest_gan_privacy.synthetic import write_dicom

SLICES = 3  # per patient in the DICOM releases below


def as_dicom_patients(release: Path, out: Path) -> Path:
    """The release's real folders as DICOM series, SLICES images per patient (one folder
    each, named neutrally), PatientIDs that are distinctive strings; generated as PNG."""
    shutil.copytree(release / "generated", out / "generated")
    for role in ("used", "not_used"):
        files = sorted((release / "real" / role).glob("*.png"))
        for i, f in enumerate(files):
            pixels = np.asarray(Image.open(f).convert("L"))
            patient = f"QQPID{role.upper()}{i // SLICES:03d}"
            write_dicom(
                out / "real" / role / f"s{i // SLICES:03d}" / f"{i:03d}.dcm",
                pixels,
                modality="MR",
                PatientID=patient,
                PatientName=f"QQNAME^{patient}",
                AccessionNumber=f"QQACC{patient[-3:]}",
                WindowCenter=128,
                WindowWidth=256,
            )
    return out


def test_orientations_are_named_as_they_turn():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert torch.equal(orient(x, ORIENTATIONS.index("transposed")), x.transpose(-2, -1))
    assert torch.equal(orient(x, ORIENTATIONS.index("mirrored left-right")), x.flip(-1))
    assert torch.equal(orient(x, ORIENTATIONS.index("mirrored top-bottom")), x.flip(-2))
    assert torch.equal(orient(x, ORIENTATIONS.index("turned 180 degrees")), x.flip(-1).flip(-2))
    assert len({tuple(orient(x, k).flatten().tolist()) for k in range(8)}) == 8


def test_the_check_finds_a_turn_and_keeps_the_identity(leaky_release):
    from pytest_gan_privacy.images import load_image_set, load_pixels

    def pixels(folder):
        return load_pixels(load_image_set(folder, "x"), 64, workers=0)

    cand = torch.cat([pixels(leaky_release / "real" / r) for r in ("used", "not_used")])
    gen = pixels(leaky_release / "generated")
    assert check_orientation(cand, gen).index == 0
    for k in (1, 4, 5):
        found = check_orientation(cand, orient(gen, k))
        # the candidates are turned the way the generated images were
        assert found.index == k
        assert found.turned and found.t_statistic > 3
        assert found.similarity[found.index] > found.similarity[0] + 0.01


def test_symmetric_images_are_not_turned_by_noise():
    disc = torch.zeros(40, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for i in range(40):
        disc[i, 0] = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < (6 + i % 9) ** 2).float()
    assert check_orientation(disc, disc.flip(0)).index == 0


def transposed_release(release: Path, out: Path) -> Path:
    shutil.copytree(release / "real", out / "real")
    (out / "generated").mkdir(parents=True)
    for f in (release / "generated").glob("*.png"):
        Image.open(f).transpose(Image.Transpose.TRANSPOSE).save(out / "generated" / f.name)
    return out


def test_a_transposed_leak_fails_and_says_why(leaky_release, tmp_path: Path, monkeypatch):
    release = transposed_release(leaky_release, tmp_path / "t")
    result = run_audit(settings_for(release, features="pixels", no_cache=True))
    assert result.orientation.name == "transposed"
    assert result.verdict == "FAIL" and result.gate.auc > 0.85
    assert any("orientation" in w and "transposed" in w for w in result.warnings)
    write_outputs(result, tmp_path / "r.html", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["orientation"]["chosen"] == "transposed" and data["orientation"]["turned"]
    assert "compared the candidates transposed" in (tmp_path / "r.html").read_text()
    # without the check (as before it), the same leak passes
    monkeypatch.setattr(loading, "check_orientation", lambda c, g: Orientation(0, [0.0] * 8))
    assert run_audit(settings_for(release, features="pixels", no_cache=True)).passed


def test_a_normal_release_keeps_its_orientation(clean_release):
    result = run_audit(settings_for(clean_release, features="pixels", no_cache=True))
    assert result.orientation.index == 0 and not result.orientation.turned
    assert not any("orientation" in w for w in result.warnings)


def test_folds_keep_each_patient_together_and_stratify():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), rng.integers(2, 6, 40))
    labels = (groups % 2).astype(int)
    folds = stratified_folds(labels, 5, 0, groups)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    for test in folds:
        rest = np.setdiff1d(np.arange(len(labels)), test)
        assert not set(groups[test]) & set(groups[rest])
        assert 0 < labels[test].mean() < 1
    with pytest.raises(AuditInputError, match="patient"):
        stratified_folds(labels, 5, 0, np.where(labels == 1, 1, groups))


def test_the_bootstrap_resamples_whole_patients():
    # 20 + 20 patients of 10 slices each, every slice of a patient called alike: the
    # interval is that of 40 units, wider than that of 400 independent images
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 10)
    labels = (groups < 20).astype(int)
    calls = np.repeat(rng.random(40) < np.where(np.arange(40) < 20, 0.7, 0.3), 10)
    by_image = bootstrap_f1_interval(labels, calls, 2000, np.random.default_rng(0))
    by_patient = bootstrap_f1_interval(labels, calls, 2000, np.random.default_rng(0), groups)
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])


def test_patient_labels_are_opaque_and_follow_content_order():
    labels = patient_labels(["MRN-123", "MRN-007", "MRN-123"], ["b1", "a9", "a1"])
    assert labels == {"MRN-123": "patient 1", "MRN-007": "patient 2"}
    patients = candidate_patients(
        ["x", "y", "x", None], ["c", "b", "a", "d"], np.array([1, 0, 1, 0])
    )
    assert patients.labels == ["patient 1", "patient 2", "patient 3"]
    assert patients.membership.tolist() == [1, 0, 0] and patients.images.tolist() == [2, 1, 1]
    assert candidate_patients([None, None], ["a", "b"], np.array([1, 0])) is None


def test_patient_score_rules():
    scores = np.array([[0.1], [0.9], [0.5], [0.3]])
    patients = candidate_patients(
        ["a", "a", "a", "b"], ["1", "2", "3", "4"], np.array([1, 1, 1, 0])
    )
    combined = {rule: patients.combine(scores, rule)[:, 0].tolist() for rule in PATIENT_SCORE_RULES}
    assert combined["max"] == [0.9, 0.3]
    assert combined["mean"] == pytest.approx([0.5, 0.3])
    assert combined["top-3 mean"] == pytest.approx([0.5, 0.3])


def test_canaries_take_one_image_of_each_patient_first():
    hashes = [f"{i:02d}" for i in range(12)]
    groups = [i // 4 for i in range(12)]  # 3 patients of 4
    picked = pick_canaries(hashes, 3, 0, groups)
    assert sorted(groups[i] for i in picked) == [0, 1, 2]
    assert pick_canaries(hashes, 5, 0) == pick_canaries(hashes, 5, 0, None)


def test_dicom_patients_are_the_unit_and_no_header_value_is_shown(leaky_release, tmp_path):
    release = as_dicom_patients(leaky_release, tmp_path / "dicom")
    result = run_audit(settings_for(release, features="pixels", no_cache=True))
    assert result.membership_unit == "patient" and not result.passed
    write_outputs(result, tmp_path / "r.html", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["membership_unit"] == "patient"
    assert data["n_used_patients"] == data["n_not_used_patients"] == 30 // SLICES
    assert set(data["image_level"]) >= {"f1", "f1_ci", "auc", "tpr_at_1pct_fpr"}
    assert data["image_level"]["auc"] == result.image_gate.auc != data["auc"]
    assert {row["patient"] for row in data["candidates"]} == {
        f"patient {n}" for n in range(1, 2 * 30 // SLICES + 1)
    }
    assert len(data["patients"]) == 20 and data["patients"][0]["images"] == SLICES
    for text in ((tmp_path / "r.json").read_text(), (tmp_path / "r.html").read_text()):
        assert "QQPID" not in text and "QQNAME" not in text and "QQACC" not in text
    assert "per patient" in (tmp_path / "r.html").read_text()


def test_a_patient_in_used_and_not_used_is_bad_input(leaky_release, tmp_path, capsys):
    release = as_dicom_patients(leaky_release, tmp_path / "dicom")
    moved = release / "real" / "not_used" / "s000" / "000.dcm"
    shutil.move(release / "real" / "used" / "s001" / "004.dcm", moved.with_name("004.dcm"))
    code = main(
        [
            "audit",
            *audit_args(release),
            "--features",
            "pixels",
            "--workers",
            "0",
            "--no-cache",
            "--report",
            str(tmp_path / "r.html"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "patient(s) have images in both used and not_used" in err
    assert "s001" in err and "s000/004.dcm" in err and "QQPID" not in err


def test_a_groups_file_makes_png_candidates_patients(clean_release, tmp_path: Path):
    lines = []
    for role in ("used", "not_used"):
        for i, f in enumerate(sorted((clean_release / "real" / role).glob("*.png"))):
            lines.append(f"{f},{role}-{i // 5}")
    (tmp_path / "groups.csv").write_text("\n".join(lines) + "\n")
    s = settings_for(
        clean_release, features="pixels", no_cache=True, groups=tmp_path / "groups.csv"
    )
    result = run_audit(s)
    assert result.membership_unit == "patient"
    assert len(result.patient_level.patients) == 12
    assert result_json(result)["n_used_patients"] == result_json(result)["n_not_used_patients"] == 6
    # the gate's numbers are the patients', the images' are beside them
    assert result.gate is result.patient_level.gate and len(result.gate.calls) == 12
    assert result_json(result)["image_level"]["auc"] == result.image_gate.auc
    assert any("too few patients" in w and "of the time" in w for w in result.warnings)
    plain = run_audit(settings_for(clean_release, features="pixels", no_cache=True))
    assert plain.membership_unit == "image" and plain.patient_level is None
    assert result_json(plain)["image_level"]["f1"] == plain.f1
    assert result_json(plain)["n_used_patients"] is None
