"""The whole audit on synthetic releases: verdicts, JSON, invariance to names and order."""

import json
import random
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import settings_for, without_clock
from PIL import Image
from safetensors.torch import save_file

from pytest_gan_privacy.encoders import TimmViTEncoder
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.features import Encoding, encode_images
from pytest_gan_privacy.images import load_image_set
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.report import write_outputs
from pytest_gan_privacy.results import result_json

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
    # what was left out is named by file, not a number
    data = without_clock(result_json(result), "inputs", "left_out")
    sha = {row["id"]: row["sha256"] for row in data["candidates"]}
    for block, key in (("near_copies", "copied"), ("exposure", "exposed")):
        data[block][key] = sorted(sha[i] for i in data[block][key])  # by content, not name
    data["exposure"]["exposed_by_near_copy"] = sorted(
        sha[i] for i in data["exposure"]["exposed_by_near_copy"]
    )
    for row in data["candidates"]:  # names change; hashes, scores and calls may not
        row.pop("id")
        for neighbour in row["nearest_generated"]:
            neighbour.pop("id")
    for pair in data["near_copies"]["pairs"]:
        pair.pop("generated")
        pair.pop("candidate")
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


def _copy(release: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    return copy


def test_exact_copies_of_members_are_the_worst_leak(clean_release, tmp_path: Path):
    copy = _copy(clean_release, tmp_path)
    for member in (copy / "real" / "used").iterdir():
        shutil.copy(member, copy / "generated" / f"copy-{member.name}")
    result = run_audit(settings_for(copy))
    assert not result.passed and result.f1 > 0.95 and result.gate.auc > 0.99
    assert any("30 real image(s) appear byte for byte" in w for w in result.warnings)


def test_unbalanced_candidates_are_warned_about_in_the_json(clean_release, tmp_path: Path):
    copy = _copy(clean_release, tmp_path)
    for extra in sorted((copy / "real" / "not_used").iterdir())[10:]:
        extra.unlink()
    result = run_audit(settings_for(copy))
    data = json.loads(json.dumps(result_json(result)))
    assert data["n_used"] == 30 and data["n_not_used"] == 10
    # 10 non-members are also too few to mean much
    assert len(data["warnings"]) == 2
    assert data["warnings"][0].startswith("too few candidates to mean much: 30 used and 10")
    assert data["warnings"][1].startswith("unbalanced candidates: 30 used vs 10 not_used")
    assert run_audit(settings_for(clean_release)).warnings == []


def test_unreadable_images_stop_the_audit_or_are_skipped_and_counted(clean_release, tmp_path):
    copy = _copy(clean_release, tmp_path)
    (copy / "generated" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-cut-")
    (copy / "real" / "used" / "notes.png").write_text("meeting notes")
    # the candidates are decoded first (duplicates by pixels are found at load)
    with pytest.raises(
        AuditInputError, match=r"1 of 31 used images.*--skip-bad-images.*\n.*notes.png: "
    ):
        run_audit(settings_for(copy))
    (copy / "real" / "used" / "notes.png").rename(tmp_path / "notes.png")
    with pytest.raises(
        AuditInputError, match=r"1 of 151 generated images.*--skip-bad-images.*\n.*broken.png: "
    ):
        run_audit(settings_for(copy))
    (tmp_path / "notes.png").rename(copy / "real" / "used" / "notes.png")
    result = run_audit(settings_for(copy, skip_bad_images=True))
    data = result_json(result)
    assert (data["n_generated"], data["n_used"]) == (150, 30)
    assert [(s["role"], Path(s["path"]).name) for s in data["skipped_images"]] == [
        ("generated", "broken.png"),
        ("used", "notes.png"),
    ]
    assert all(s["reason"] for s in data["skipped_images"])
    assert "2 unreadable image(s) were skipped (generated 1, used 1)" in data["warnings"][0]
    clean = run_audit(settings_for(clean_release))
    assert _numbers(result)["attacks"] == _numbers(clean)["attacks"]


def test_16_bit_palette_rgba_and_cmyk_images_work(leaky_release, tmp_path: Path):
    copy = _copy(leaky_release, tmp_path)
    files = sorted(p for p in copy.rglob("*.png"))
    for i, path in enumerate(files):
        img = Image.open(path).convert("L")
        kind = i % 4
        if kind == 0:
            Image.fromarray(np.asarray(img).astype(np.uint16) * 257).save(path)
        elif kind == 1:
            img.convert("P").save(path)
        elif kind == 2:
            img.convert("RGBA").save(path)
        else:
            path.unlink()
            img.convert("CMYK").save(path.with_suffix(".jpg"), quality=95)
    result = run_audit(settings_for(copy))
    original = run_audit(settings_for(leaky_release))
    assert result_json(result)["n_generated"] == 150
    assert not result.passed and result.gate.auc > 0.95  # the leak is found in every mode
    # decoded as the originals were (up to JPEG's and colour conversion's rounding)
    for name in ("pixels nearest-neighbour", "patches nearest-neighbour"):
        assert abs(result.attacks[name].metrics.auc - original.attacks[name].metrics.auc) < 0.05


def test_an_audit_makes_no_network_connection(leaky_release, monkeypatch, tmp_path: Path):
    """Offline is the normal case: with every internet socket refused, the audit runs,
    and a timm ViT builds from a local checkpoint and encodes."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    class NoInternetSocket(socket.socket):
        def __init__(self, family=socket.AF_INET, *args, **kwargs):
            if family in (socket.AF_INET, socket.AF_INET6):
                refuse(family)
            super().__init__(family, *args, **kwargs)

    torch.manual_seed(0)
    weights = tmp_path / "vit.safetensors"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    monkeypatch.setattr(socket, "socket", NoInternetSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("example.org", 443))

    assert not run_audit(settings_for(leaky_release, no_cache=True)).passed
    vit = TimmViTEncoder("vit_tiny_patch16_224", weights, image_size=32)
    members = load_image_set(leaky_release / "real" / "used", "used")
    vit.fit(members, torch.device("cpu"), lambda *progress: None)
    assert encode_images(members, vit, Encoding("cpu", workers=0)).shape == (30, 192)


def test_same_seed_same_numbers(leaky_release, tmp_path: Path):
    """Two CPU runs with one seed give identical numbers, computed or read from the cache."""
    first = run_audit(settings_for(leaky_release, no_cache=True, seed=3))
    second = run_audit(settings_for(leaky_release, no_cache=True, seed=3))
    cached = run_audit(settings_for(leaky_release, cache_dir=tmp_path / "c", seed=3))
    again = run_audit(settings_for(leaky_release, cache_dir=tmp_path / "c", seed=3))
    assert again.cache["hits"] > 0 and again.cache["misses"] == 0
    assert _numbers(first) == _numbers(second) == _numbers(cached) == _numbers(again)
    other = run_audit(settings_for(leaky_release, no_cache=True, seed=4))
    assert _numbers(other) != _numbers(first)


def test_the_default_gate_fails_a_leak_through_each_of_its_checks(leaky_release):
    default = run_audit(settings_for(leaky_release))
    members = result_json(default)["near_copies"]["members_copied"]
    e = default.exposure
    assert members > 0 and e.members_exposed > e.non_members_exposed and e.p_value < 0.01
    assert [f.split(" ")[0] for f in default.failures] == [
        "leakage",
        str(members),
        str(e.members_exposed),
    ]
    loose = run_audit(
        settings_for(leaky_release, max_f1=1.0, allow_member_near_copies=True, exposure_alpha=0)
    )
    assert loose.passed and len(loose.near_copies) > 0
    assert result_json(loose)["near_copies"]["non_members_copied"] == 0
    assert result_json(loose)["exposure"]["significant"] is False  # the check is off
    strict = run_audit(
        settings_for(
            leaky_release,
            max_f1=1.0,
            allow_member_near_copies=True,
            exposure_alpha=0,
            fail_on_near_copies=True,
        )
    )
    assert not strict.passed
    assert strict.failures == [
        f"{len(strict.near_copies)} generated image(s) are near-copies of candidates"
    ]


def test_a_clean_release_passes_every_check_conclusively(clean_release):
    result = run_audit(settings_for(clean_release))
    assert result.verdict == "PASS" and result.failures == []
    assert len(result.near_copies) == 0 and result.near_copies.copied == []
    assert result.exposure.p_value > 0.05
    assert result.power.levels["exact"].fraction == 1.0 and result.power.fraction >= 0.9


def test_a_power_check_that_misses_copies_makes_a_pass_inconclusive(clean_release):
    from dataclasses import replace

    from pytest_gan_privacy.gate import Evidence, decide
    from pytest_gan_privacy.nearcopies import DECIDING_LEVEL, LevelPower, PowerCheck

    def decided(result, power, settings):
        """The result had the pipeline found this power check, under these settings."""
        labels = result.candidates.labels
        evidence = Evidence(settings, result.gate, labels, result.near_copies, None, power)
        return replace(result, power=power, settings=settings, decision=decide(evidence))

    result = run_audit(settings_for(clean_release))
    assert result.verdict == "PASS" and result.power.fraction >= 0.9
    weak = PowerCheck({DECIDING_LEVEL: LevelPower(10, 7)}, list(range(10)))
    result = decided(result, weak, result.settings)
    assert result.verdict == "PASS (inconclusive)" and result.passed
    assert result_json(result)["power_check"]["conclusive"] is False
    result = decided(result, weak, replace(result.settings, fail_inconclusive=True))
    assert result.verdict == "FAIL"
    assert "found only 7 of 10 planted copies" in result.failures[0]


def _copy_inside(release: Path, folder: str, how: str) -> Path:
    """Add one copy of an image of `folder`: the same bytes, or the same pixels in a
    file with other bytes (saved again without compression)."""
    source = sorted((release / folder).iterdir())[0]
    target = release / folder / "zz-copy.png"
    if how == "same bytes":
        shutil.copy(source, target)
    else:
        Image.open(source).save(target, compress_level=0)
        assert target.read_bytes() != source.read_bytes()
    return target


@pytest.mark.parametrize(
    "folder, how",
    [
        ("real/used", "same bytes"),
        ("real/used", "same pixels"),
        ("real/not_used", "same bytes"),
        ("real/not_used", "same pixels"),
        ("generated", "same bytes"),
    ],
)
def test_a_copy_inside_a_folder_is_counted_once_and_warned_about(
    clean_release, tmp_path: Path, folder, how
):
    """A duplicate used to set the near-copy threshold at 1 (two "distinct" candidates
    that are identical): the power check found 0 of 10 and the PASS was inconclusive.
    The copy is counted once (and the reference skips a twin anyway)."""
    copy = _copy(clean_release, tmp_path)
    _copy_inside(copy, folder, how)
    result = run_audit(settings_for(copy, features="pixels"))
    assert result.verdict == "PASS" and result.power.planted == 30  # every member
    assert result.power.levels["exact"].found == 30 and result.power.fraction >= 0.9
    role = folder.split("/")[-1]
    (warning,) = [w for w in result.warnings if "copies of another image" in w]
    # which of the two is kept follows their content, never their names
    pair = {f"{role}/zz-copy.png", f"{role}/{sorted((copy / folder).iterdir())[0].name}"}
    assert warning.startswith(f"1 {role} image(s) are copies of another image in that folder")
    dropped, kept = warning.split("counted once: ")[1].split(". Remove")[0].split(" = ")
    assert {dropped, kept} == pair
    # every number is that of the folder without the copy left out
    without = tmp_path / "without"
    shutil.copytree(copy, without)
    (without / folder / dropped.split("/", 1)[1]).unlink()
    expected = run_audit(settings_for(without, features="pixels"))
    numbers, expected = _numbers(result), _numbers(expected)
    assert expected.pop("warnings") == [] and len(numbers.pop("warnings")) == 1
    assert numbers == expected


def test_the_same_pixels_in_used_and_not_used_are_refused(clean_release, tmp_path: Path):
    copy = _copy(clean_release, tmp_path)
    member = sorted((copy / "real/used").iterdir())[0]
    Image.open(member).save(copy / "real/not_used/resaved.png", compress_level=0)
    with pytest.raises(AuditInputError, match="1 image.*have the same pixels") as err:
        run_audit(settings_for(copy, features="pixels"))
    assert f"used/{member.name} = not_used/resaved.png" in str(err.value)


def test_a_reference_that_shares_images_with_the_candidates_is_refused(
    clean_release, tmp_path: Path
):
    copy = _copy(clean_release, tmp_path)
    (copy / "reference").mkdir()
    member = sorted((copy / "real/used").iterdir())[0]
    shutil.copy(member, copy / "reference/also-a-member.png")
    with pytest.raises(AuditInputError, match="1 image.*in both used and reference") as err:
        run_audit(settings_for(copy, features="pixels", reference=copy / "reference"))
    assert f"used/{member.name} = reference/also-a-member.png" in str(err.value)
    assert "the reference holds real images that are neither candidates" in str(err.value)
    with pytest.raises(AuditInputError, match="the used and reference folders are the same"):
        run_audit(settings_for(copy, reference=copy / "real/used"))


def test_tiny_inputs_are_warned_about_in_the_json_and_the_report(tmp_path: Path):
    from pytest_gan_privacy.report import render_html
    from pytest_gan_privacy.synthetic import make_release

    tiny = make_release(tmp_path / "t", leaky=False, n_members=2, n_non_members=2, n_generated=3)
    result = run_audit(settings_for(tiny, features="pixels", folds=2))
    data = result_json(result)
    assert any(
        w.startswith("too few candidates to mean much: 2 used and 2") for w in data["warnings"]
    )
    assert any(
        w.startswith("fewer generated images (3) than candidates (4)") for w in data["warnings"]
    )
    html = render_html(result)
    assert "too few candidates to mean much" in html and "fewer generated images (3)" in html


def test_generated_images_that_hold_the_non_members_are_refused(clean_release, tmp_path: Path):
    """A generated folder that links to the real folders passed the gate (F1 0.56): with
    every candidate among the "generated" images, no attack can tell members apart."""
    import os

    copy = _copy(clean_release, tmp_path)
    os.symlink(copy / "real", copy / "generated" / "real")
    with pytest.raises(AuditInputError, match="30 not_used image.*byte for byte.*never saw"):
        run_audit(settings_for(copy, features="pixels"))


def test_a_blank_image_shared_by_generated_and_non_members_is_no_error(
    clean_release, tmp_path: Path
):
    copy = _copy(clean_release, tmp_path)
    Image.new("L", (64, 64), 0).save(copy / "real/not_used/blank.png")
    Image.new("L", (64, 64), 0).save(copy / "generated/blank.png")
    assert (copy / "real/not_used/blank.png").read_bytes() == (
        copy / "generated/blank.png"
    ).read_bytes()
    result = run_audit(settings_for(copy, features="pixels"))
    assert any("1 real image(s) appear byte for byte" in w for w in result.warnings)


def test_a_re_encoded_member_does_not_blind_the_power_check(clean_release, tmp_path: Path):
    """A member saved again as JPEG is nearly the same image: the largest real-pair
    similarity would be theirs, but the reference skips each image's nearest other one."""
    copy = _copy(clean_release, tmp_path)
    member = sorted((copy / "real/used").iterdir())[0]
    Image.open(member).save(copy / "real/used/again.jpg", quality=95)
    result = run_audit(settings_for(copy, features="pixels"))
    assert result.verdict == "PASS" and result.power.fraction >= 0.9
    assert not any(w.startswith("the power check") for w in result.warnings)


def test_an_inconclusive_power_check_names_the_candidates_that_set_the_threshold(
    clean_release, tmp_path: Path
):
    """Four versions of one image (three re-encodings) are closer than copies: skipping
    the two nearest no longer helps, and the warning says which candidates."""
    copy = _copy(clean_release, tmp_path)
    for folder in ("used", "not_used"):  # both classes alike: the gate's other checks pass
        for image in sorted((copy / "real" / folder).iterdir())[:6]:
            for quality in (85, 90, 97):
                target = image.with_name(f"{image.stem}-{quality}.jpg")
                Image.open(image).save(target, quality=quality)
    result = run_audit(settings_for(copy, features="pixels"))
    assert result.near_copies.threshold.limited_by == "real pairs"
    assert result.verdict == "PASS (inconclusive)", result.failures
    (warning,) = [w for w in result.warnings if w.startswith("the power check found only")]
    a, b = (result.candidates.ids[i] for i in result.near_copies.threshold.pair)
    assert a in warning and b in warning and "--groups" in warning
    stem = lambda image_id: image_id.split("/")[-1].split("-")[0].split(".")[0]  # noqa: E731
    assert stem(a) == stem(b)  # two versions of one image
