"""`gan-privacy predict`: calls for unlabelled images from a labelled development set."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import predict_args, predict_release
from PIL import Image

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.prediction import (
    RULE,
    TRANSFER_RULES,
    cross_fitted_estimate,
    prevalence_calls,
    threshold_calls,
)
from pytest_gan_privacy.synthetic import write_dicom

FAST = ["--features", "pixels", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A leaky release in the predict layout, and its candidates' hidden labels."""
    root = tmp_path_factory.mktemp("predict-leaky")
    return root, predict_release(root, leaky=True, seed=1)


@pytest.fixture
def release(leaky, tmp_path) -> tuple[Path, dict[str, int]]:
    """A copy of the leaky release to change."""
    root = tmp_path / "release"
    shutil.copytree(leaky[0], root)
    return root, dict(leaky[1])


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_predictions_scores_and_json(leaky, tmp_path, capsys):
    root, hidden = leaky
    out = tmp_path / "out" / "predictions.csv"
    extra = ["--scores", str(tmp_path / "scores.csv"), "--json", str(tmp_path / "p.json")]
    assert main([*predict_args(root, out), *extra, *FAST]) == 0

    lines = out.read_text().splitlines()
    assert lines == sorted(lines)
    rows = [line.split(",") for line in lines]
    assert [name for name, _ in rows] == sorted(hidden)  # one line per candidate file
    assert {call for _, call in rows} <= {"0", "1"}
    scores = read_csv(tmp_path / "scores.csv")
    assert [name for name, _ in scores] == sorted(hidden)
    values = {name: float(score) for name, score in scores}
    calls = dict(rows)
    # a call of 1 is a higher score than any call of 0 (the prevalence rule)
    assert min(values[n] for n in calls if calls[n] == "1") > max(
        values[n] for n in calls if calls[n] == "0"
    )

    result = json.loads((tmp_path / "p.json").read_text())
    assert result["generator"] == "pytest-gan-privacy" and result["command"] == "predict"
    estimate = result["development"]["estimate"]
    assert estimate["f1_ci"][0] <= estimate["f1"] <= estimate["f1_ci"][1]
    assert estimate["chance_f1"] == pytest.approx(0.5, abs=0.05)
    assert result["attack"] in result["development"]["attack_auc"]
    called = sum(call == "1" for _, call in rows)
    assert result["candidates"]["predicted_used"] == called
    assert result["candidates"]["predicted_fraction"] == pytest.approx(called / 40)
    text = capsys.readouterr().out
    assert "expected F1" in text and "chance" in text and f"predicted used: {called} of 40" in text
    assert f"attack: {result['attack']}" in text


def test_a_leaky_release_is_predicted_far_better_than_chance(leaky, tmp_path):
    root, hidden = leaky
    out = tmp_path / "predictions.csv"
    assert main([*predict_args(root, out), *FAST]) == 0
    calls = {name: int(call) for name, call in read_csv(out)}
    tp = sum(calls[n] and hidden[n] for n in hidden)
    f1 = 2 * tp / (sum(calls.values()) + sum(hidden.values()))
    assert f1 >= 0.9  # chance: 0.5


def test_calls_do_not_depend_on_the_candidates_names(release, tmp_path):
    """Labels-blind: the same images under shuffled names get the same calls."""
    root, _ = release
    first = tmp_path / "first.csv"
    assert main([*predict_args(root, first), *FAST]) == 0
    folder = root / "candidates"
    by_content = {sha(folder / n): c for n, c in read_csv(first)}

    paths = sorted(folder.iterdir())
    names = [p.name for p in paths]
    np.random.default_rng(7).shuffle(names)
    for i, path in enumerate(paths):  # two steps: a new name may be an old one
        path.rename(folder / f"tmp-{i}.png")
    for i, name in enumerate(names):
        (folder / f"tmp-{i}.png").rename(folder / f"x{name}")
    second = tmp_path / "second.csv"
    assert main([*predict_args(root, second), *FAST]) == 0
    assert {sha(folder / n): c for n, c in read_csv(second)} == by_content


def test_copies_among_the_candidates_get_their_twins_call(release, tmp_path, capsys):
    """The same bytes, and the same pixels in another format: one image, one call.
    The BMP comes first in content order, so the PNG's byte copy points to a PNG that
    is itself a copy (of the BMP)."""
    root, _ = release
    folder = root / "candidates"
    for original in sorted(folder.iterdir()):
        Image.open(original).save(folder / "zz-copy.bmp")
        if sha(folder / "zz-copy.bmp") < sha(original):
            break
    shutil.copy(original, folder / "zz-copy.png")
    out = tmp_path / "predictions.csv"
    assert main([*predict_args(root, out), *FAST]) == 0
    calls = dict(read_csv(out))
    assert calls["zz-copy.png"] == calls["zz-copy.bmp"] == calls[original.name]
    assert "copies of another candidate" in capsys.readouterr().out


@pytest.mark.parametrize("same", ["bytes", "pixels"])
def test_a_development_image_among_the_candidates_is_refused(release, tmp_path, capsys, same):
    root, _ = release
    used = sorted((root / "real" / "used").iterdir())[0]
    if same == "bytes":
        shutil.copy(used, root / "candidates" / "again.png")
        twin = "again.png"
    else:  # other bytes, the same image
        Image.open(used).save(root / "candidates" / "again.bmp")
        twin = "again.bmp"
    out = tmp_path / "predictions.csv"
    assert main([*predict_args(root, out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"used/{used.name} = candidates/{twin}" in err and "development set" in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["used", "generated", "holds not_used"])
def test_a_candidates_folder_among_the_development_folders_is_refused(
    release, tmp_path, capsys, where
):
    root, _ = release
    folder = {
        "used": root / "real" / "used",
        "generated": root / "generated",
        "holds not_used": root / "real",
    }[where]
    args = predict_args(root, tmp_path / "p.csv")
    args[args.index("--candidates") + 1] = str(folder)
    assert main([*args, *FAST]) == 2
    err = capsys.readouterr().err
    assert "candidates folder" in err or "same folder" in err


def test_bad_candidate_file_exits_2_naming_it(release, tmp_path, capsys):
    root, _ = release
    (root / "candidates" / "readme.png").write_text("hello")
    assert main([*predict_args(root, tmp_path / "p.csv"), *FAST]) == 2
    assert "readme.png: not an image" in capsys.readouterr().err


def test_candidates_are_required(release, tmp_path, capsys):
    root, _ = release
    args = predict_args(root, tmp_path / "p.csv")
    i = args.index("--candidates")
    with pytest.raises(SystemExit) as exc:
        main([*args[:i], *args[i + 2 :], *FAST])
    assert exc.value.code == 2
    assert "--candidates" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["--out", "--scores", "--json"])
def test_outputs_never_go_on_the_inputs(release, tmp_path, capsys, output):
    root, _ = release
    victim = sorted((root / "candidates").iterdir())[0]
    before = victim.read_bytes()
    args = predict_args(root, tmp_path / "p.csv")
    if output == "--out":
        args[args.index("--out") + 1] = str(victim)
    else:
        args += [output, str(root / "real" / "used" / "notes.txt")]
    assert main([*args, *FAST]) == 2
    assert "input" in capsys.readouterr().err
    assert victim.read_bytes() == before
    assert not (root / "real" / "used" / "notes.txt").exists()
    assert not (tmp_path / "p.csv").exists()


def test_the_outputs_may_not_be_one_file(release, tmp_path, capsys):
    root, _ = release
    out = tmp_path / "p.csv"
    assert main([*predict_args(root, out), "--scores", str(out), *FAST]) == 2
    assert "same file" in capsys.readouterr().err


def test_prevalence_calls_the_development_fraction_by_score():
    train, labels = np.arange(10.0), np.r_[np.zeros(7, int), np.ones(3, int)]
    calls = prevalence_calls(train, labels, np.array([5.0, 1.0, 9.0, 3.0, 7.0, 0.0]))
    assert calls.tolist() == [False, False, True, False, True, False]  # 30 % of 6: 2


def test_the_score_threshold_is_the_development_sets_level():
    train, labels = np.arange(10.0), np.r_[np.zeros(7, int), np.ones(3, int)]
    # the development set's 3 members are called at 7 and up: the level is 6.5
    calls = threshold_calls(train, labels, np.array([6.0, 6.6, 20.0, -1.0]))
    assert calls.tolist() == [False, True, True, False]  # whatever fraction that is


def test_the_estimate_is_cross_fitted_and_at_chance_without_signal():
    """Scores without information: the estimate stays near chance (no fold is called
    by an attack or level chosen on itself)."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100, int), np.zeros(100, int)]
    f1s = [
        cross_fitted_estimate(rng.normal(size=(200, 5)), labels, TRANSFER_RULES[RULE], 5, s, 0).f1
        for s in range(20)
    ]
    assert abs(np.mean(f1s) - 0.5) < 0.05


def test_skipped_candidate_files_have_no_line_and_are_named(release, tmp_path, capsys):
    root, hidden = release
    (root / "candidates" / "readme.png").write_text("hello")
    out = tmp_path / "p.csv"
    assert main([*predict_args(root, out), "--skip-bad-images", *FAST]) == 0
    assert [name for name, _ in read_csv(out)] == sorted(hidden)
    assert "1 unreadable candidate file(s) were skipped" in capsys.readouterr().out


def test_dicom_candidates_get_the_calls_of_their_png_twins(leaky, tmp_path):
    """Formats: the candidates as DICOM files (any name, found by content) are called
    as the same slices as PNG are."""
    root, _ = leaky
    png = tmp_path / "png.csv"
    assert main([*predict_args(root, png), *FAST]) == 0
    release = tmp_path / "release"
    shutil.copytree(root, release, ignore=shutil.ignore_patterns("candidates"))
    (release / "candidates").mkdir()
    for path in sorted((root / "candidates").iterdir()):
        # an 8-bit CT slice whose header window shows 0-255 as they are
        pixels = np.array(Image.open(path))
        write_dicom(
            release / "candidates" / f"{path.stem}.dcm", pixels, WindowCenter=127.5, WindowWidth=256
        )
    dicom = tmp_path / "dicom.csv"
    assert main([*predict_args(release, dicom), *FAST]) == 0
    assert [(Path(n).stem, c) for n, c in read_csv(dicom)] == [
        (Path(n).stem, c) for n, c in read_csv(png)
    ]


def write_groups(root: Path, shared_with_candidate: bool = False) -> Path:
    """A groups CSV: two images per patient in each folder; optionally the first
    candidate is a patient of the used folder."""
    lines = []
    for folder in ("real/used", "real/not_used", "candidates"):
        for i, path in enumerate(sorted((root / folder).iterdir())):
            lines.append(f"{folder}/{path.name},{folder}-{i // 2}")
    if shared_with_candidate:
        first = next(i for i, line in enumerate(lines) if line.startswith("candidates/"))
        lines[first] = lines[first].split(",")[0] + ",real/used-0"
    csv_path = root / "groups.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def test_patients_set_the_folds_and_a_shared_patient_is_named(release, tmp_path, capsys):
    root, hidden = release
    groups = write_groups(root, shared_with_candidate=True)
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                *predict_args(root, out),
                "--groups",
                str(groups),
                *FAST,
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    assert [name for name, _ in read_csv(out)] == sorted(hidden)
    text = capsys.readouterr().out
    assert "1 candidate(s) belong to patients with development images" in text
    assert json.loads((tmp_path / "p.json").read_text())["settings"]["groups"] == str(groups)


def test_a_patient_in_used_and_not_used_is_refused(release, tmp_path, capsys):
    root, _ = release
    groups = write_groups(root)
    text = groups.read_text().replace("real/not_used-0\n", "real/used-0\n")
    groups.write_text(text)
    assert main([*predict_args(root, tmp_path / "p.csv"), "--groups", str(groups), *FAST]) == 2
    assert "in both used and not_used" in capsys.readouterr().err
