"""The whole audit on synthetic releases: verdicts, JSON, invariance to names and order."""

import json
import random
import shutil
from pathlib import Path

import pytest

from pytest_gan_privacy.audit import run_audit
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.report import write_outputs
from pytest_gan_privacy.settings import AuditSettings

JSON_KEYS = {
    "passed",
    "f1",
    "f1_ci",
    "chance_f1",
    "max_f1",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "auc",
    "tpr_at_1pct_fpr",
    "n_generated",
    "n_used",
    "n_not_used",
    "features",
    "seed",
    "seconds",
    "versions",
}


def settings_for(release: Path, **kwargs) -> AuditSettings:
    return AuditSettings(
        generated=release / "generated",
        used=release / "real" / "used",
        not_used=release / "real" / "not_used",
        workers=0,
        **kwargs,
    )


def test_leaky_release_fails_and_clean_release_passes(leaky_release, clean_release):
    leaky = run_audit(settings_for(leaky_release))
    clean = run_audit(settings_for(clean_release))
    assert not leaky.passed and leaky.f1 > 0.7 and leaky.gate.auc > 0.85
    assert clean.passed and clean.gate.auc < 0.75
    lo, hi = leaky.gate.f1_ci
    assert lo <= leaky.f1 <= hi


def test_json_result_has_the_documented_fields(leaky_release, tmp_path: Path):
    result = run_audit(settings_for(leaky_release))
    write_outputs(result, tmp_path / "r.html", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert JSON_KEYS <= set(data)
    assert data["passed"] is False and data["n_used"] == 30 and data["n_generated"] == 150
    assert set(data["versions"]) == {"pytest_gan_privacy", "torch", "timm"}
    assert len(data["f1_ci"]) == 2
    assert "FAIL" in (tmp_path / "r.html").read_text()


def _numbers(result) -> dict:
    data = result.as_dict()
    for volatile in ("created", "seconds", "timings", "settings", "inputs"):
        data.pop(volatile)
    for row in data["candidates"]:  # names change; hashes, scores and calls may not
        row.pop("id")
        for neighbour in row["nearest_generated"]:
            neighbour.pop("id")
    return data


def test_numbers_do_not_depend_on_file_names_or_order(leaky_release, tmp_path: Path):
    """Shuffle and rename every file (and nest some): the same numbers come out."""
    rng = random.Random(7)
    copy = tmp_path / "renamed"
    for sub in ("generated", "real/used", "real/not_used"):
        files = sorted((leaky_release / sub).iterdir())
        names = [f"{rng.randrange(10**9):09d}.png" for _ in files]
        rng.shuffle(names)
        for i, (src, name) in enumerate(zip(files, names, strict=True)):
            dest = copy / sub / ("nested" if i % 3 == 0 else "") / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    original = run_audit(settings_for(leaky_release))
    renamed = run_audit(settings_for(copy))
    assert _numbers(original) == _numbers(renamed)


def test_same_image_in_used_and_not_used_is_refused(clean_release, tmp_path: Path):
    copy = tmp_path / "dup"
    shutil.copytree(clean_release, copy)
    member = next((copy / "real" / "used").iterdir())
    shutil.copy(member, copy / "real" / "not_used" / "same-as-member.png")
    with pytest.raises(AuditInputError, match="1 image.*in both used and not_used") as err:
        run_audit(settings_for(copy))
    assert "same-as-member.png" in str(err.value)


def test_too_few_candidates_names_the_folder(clean_release, tmp_path: Path):
    copy = tmp_path / "few"
    shutil.copytree(clean_release, copy)
    for extra in sorted((copy / "real" / "used").iterdir())[3:]:
        extra.unlink()
    with pytest.raises(AuditInputError, match="used folder has 3 image.*--folds"):
        run_audit(settings_for(copy))
