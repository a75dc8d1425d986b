"""Settings: every option validated where it enters, and input folders that make sense."""

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import settings_for
from sklearn.model_selection import StratifiedKFold

from pytest_gan_privacy.cli import build_parser
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.settings import (
    MAX_SEED,
    OPTIONS,
    PATH_KINDS,
    AuditSettings,
    check_input_paths,
)

INT_OPTIONS = [o for o in OPTIONS if o.kind == "int"]


@pytest.mark.parametrize("option", INT_OPTIONS, ids=lambda o: o.name)
def test_every_whole_number_option_has_a_range_and_keeps_to_it(option):
    assert option.maximum is not None, f"{option.name} declares no upper end"
    assert option.parse(str(option.minimum)) == option.minimum
    assert option.parse(str(option.maximum)) == option.maximum
    for outside in (option.minimum - 1, option.maximum + 1):
        with pytest.raises(argparse.ArgumentTypeError, match=f"from {option.minimum} to"):
            option.parse(str(outside))
    for malformed in ("", "x", "1.5", "True"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
            option.parse(malformed)


def test_the_seed_range_is_what_numpy_torch_and_scikit_learn_accept():
    """The largest seed works everywhere a seed goes; one more fails in scikit-learn's
    folds, which is why the parser stops there."""
    labels = np.r_[np.ones(5, int), np.zeros(5, int)]
    np.random.default_rng(MAX_SEED)
    torch.Generator().manual_seed(MAX_SEED)
    list(StratifiedKFold(2, shuffle=True, random_state=MAX_SEED).split(labels, labels))
    with pytest.raises(ValueError):
        list(StratifiedKFold(2, shuffle=True, random_state=MAX_SEED + 1).split(labels, labels))
    seed = next(o for o in OPTIONS if o.name == "seed")
    with pytest.raises(argparse.ArgumentTypeError, match="4,294,967,295"):
        seed.parse("4294967296")


def test_the_power_check_needs_at_least_one_canary():
    canaries = next(o for o in OPTIONS if o.name == "canaries")
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to"):
        canaries.parse("0")


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.is_path], ids=lambda o: o.name)
@pytest.mark.parametrize("value", ["", "   ", "data\0used"])
def test_empty_paths_and_nul_are_refused(option, value):
    """An unset CI variable (`--generated "$GEN"`) would otherwise mean the working folder."""
    with pytest.raises(argparse.ArgumentTypeError, match="empty|NUL"):
        option.parse(value)


@pytest.mark.parametrize("value", [".", "..", "/", "out/.."])
def test_an_output_must_name_a_file(value):
    report = next(o for o in OPTIONS if o.name == "report")
    with pytest.raises(argparse.ArgumentTypeError, match="names a folder, not a file"):
        report.parse(value)


def test_a_home_folder_that_does_not_exist_is_a_message():
    generated = next(o for o in OPTIONS if o.name == "generated")
    with pytest.raises(argparse.ArgumentTypeError, match="home folder is unknown"):
        generated.parse("~no-such-user-here/generated")


def test_every_kind_of_path_is_known():
    assert {o.kind for o in OPTIONS if o.is_path} == set(PATH_KINDS)
    assert not any(o.kind == "path" for o in OPTIONS)


def test_settings_built_in_code_are_validated_too(clean_release):
    with pytest.raises(AuditInputError, match="seed must be from 0"):
        settings_for(clean_release, seed=2**32)
    with pytest.raises(AuditInputError, match="canaries must be from 1"):
        settings_for(clean_release, canaries=0)


def test_every_help_text_prints_with_argparse():
    """argparse formats help strings with %: a literal % must be doubled."""
    parser = build_parser()
    audit = parser._subparsers._group_actions[0].choices["audit"]
    text = " ".join(audit.format_help().split())
    assert "fewer than 90% of the planted copies" in text
    for option in OPTIONS:
        assert f"--{option.flag}" in text


# --- input folders that make sense ---------------------------------------------------


def _release(tmp_path: Path) -> Path:
    for folder in ("generated", "real/used", "real/not_used", "reference"):
        (tmp_path / folder).mkdir(parents=True)
    return tmp_path


def _settings(root: Path, **paths) -> AuditSettings:
    values = dict(
        generated=root / "generated", used=root / "real/used", not_used=root / "real/not_used"
    )
    values.update({k: root / v for k, v in paths.items()})
    return AuditSettings(**values)


@pytest.mark.parametrize(
    "paths, message",
    [
        ({"generated": "."}, "the used folder .* is inside the generated folder"),
        ({"generated": "real"}, "the used folder .* is inside the generated folder"),
        ({"not_used": "real/used"}, "the used and not_used folders are the same folder"),
        ({"used": "real"}, "the not_used folder .* is inside the used folder"),
        ({"reference": "real/used"}, "the used and reference folders are the same folder"),
        ({"reference": "real"}, "inside the reference folder"),
        ({"generated": "real/used/sub"}, "the generated folder .* is inside the used folder"),
        ({"generated": "missing"}, "the generated folder .*missing does not exist"),
        ({"groups": "real"}, "the groups path .* is a folder: give a file"),
        ({"checkpoint": "missing.pt"}, "the checkpoint file .* does not exist"),
    ],
)
def test_input_folders_that_overlap_or_are_missing_are_refused(tmp_path, paths, message):
    root = _release(tmp_path)
    (root / "real/used/sub").mkdir()
    with pytest.raises(AuditInputError, match=message):
        check_input_paths(_settings(root, **paths))


def test_the_same_folder_through_a_link_is_the_same_folder(tmp_path):
    root = _release(tmp_path)
    os.symlink(root / "real/used", root / "link")
    with pytest.raises(AuditInputError, match="the used and not_used folders are the same"):
        check_input_paths(_settings(root, not_used="link"))
    (root / "image.png").write_bytes(b"")
    with pytest.raises(AuditInputError, match="is not a folder"):
        check_input_paths(_settings(root, used="image.png"))


def test_distinct_folders_side_by_side_pass(tmp_path):
    root = _release(tmp_path)
    check_input_paths(_settings(root, reference="reference"))
