"""`gan-privacy audit`: exit status 0 pass, 1 leak, 2 bad input or usage."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import audit_args, write_big_png
from PIL import Image

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.settings import OPTIONS


def test_exit_status_0_for_a_clean_release(clean_release, tmp_path: Path, capsys):
    code = main(
        [
            "audit",
            *audit_args(clean_release),
            "--report",
            str(tmp_path / "r.html"),
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("PASS")
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True


def test_exit_status_1_for_a_leak(leaky_release, tmp_path: Path, capsys):
    code = main(
        [
            "audit",
            *audit_args(leaky_release),
            "--report",
            str(tmp_path / "r.html"),
            "--json",
            str(tmp_path / "numbers.json"),
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert code == 1
    assert "FAIL: leakage F1" in capsys.readouterr().out
    assert (tmp_path / "numbers.json").is_file()


def test_exit_status_2_for_a_missing_folder_without_traceback(tmp_path: Path, capsys):
    code = main(
        [
            "audit",
            "--generated",
            str(tmp_path / "g"),
            "--used",
            str(tmp_path),
            "--not-used",
            str(tmp_path),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "generated folder" in err and "does not exist" in err and "Traceback" not in err


def test_exit_status_2_for_a_bad_limit_from_the_installed_script(clean_release):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_gan_privacy.cli",
            "audit",
            *audit_args(clean_release),
            "--max-f1",
            "1.5",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "F1 limit must be between 0 and 1" in proc.stderr


def test_a_default_report_path_never_replaces_a_file_the_user_wrote(
    clean_release, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gan-audit-report.html").write_text("my notes")
    code = main(["audit", *audit_args(clean_release), "--workers", "0", "--quiet"])
    assert code == 2
    assert "not written by pytest-gan-privacy" in capsys.readouterr().err
    assert (tmp_path / "gan-audit-report.html").read_text() == "my notes"


def _break(case: str, release: Path) -> str:
    """Damage a copy of a release as `case` says; returns text the message must name."""

    generated, used, not_used = (
        release / "generated",
        release / "real/used",
        release / "real/not_used",
    )
    if case == "empty folder":
        shutil.rmtree(used)
        used.mkdir()
        return f"used folder {used} has no files"
    if case == "only non-image files":
        shutil.rmtree(used)
        used.mkdir()
        (used / "labels.csv").write_text("id,label\n")
        return "has only 1 non-image files"
    if case == "zero-byte file":
        (generated / "zero.png").write_bytes(b"")
        return "zero.png: not an image"
    if case == "truncated png":
        data = next(used.iterdir()).read_bytes()
        (used / "cut.png").write_bytes(data[: len(data) * 2 // 3])
        return "cut.png: corrupt or truncated image"
    if case == "text named .png":
        (not_used / "readme.png").write_text("hello")
        return "readme.png: not an image"
    if case == "1x1 image":
        Image.new("L", (1, 1)).save(generated / "dot.png")
        return "dot.png: cannot be decoded (1x1 pixels is too small"
    if case == "huge image":
        write_big_png(generated / "huge.png", 20_000, 20_000)
        return "huge.png: too large"
    if case == "broken link":
        (generated / "gone.png").symlink_to(release / "nowhere.png")
        return "gone.png: cannot read it (a broken link"
    if case == "link loop":
        os.symlink("loop.png", generated / "loop.png")
        return "loop.png: cannot read it"
    if case == "same image in used and not_used":
        shutil.copy(next(used.iterdir()), not_used / "twin.png")
        return "twin.png"
    if case == "fewer candidates than folds":
        for extra in sorted(not_used.iterdir())[4:]:
            extra.unlink()
        return "not_used folder has 4 image(s)"
    raise ValueError(case)


BAD_INPUTS = [
    "empty folder",
    "only non-image files",
    "zero-byte file",
    "truncated png",
    "text named .png",
    "1x1 image",
    "huge image",
    "broken link",
    "link loop",
    "same image in used and not_used",
    "fewer candidates than folds",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_naming_the_file_without_traceback(
    case, clean_release, tmp_path: Path, capsys
):

    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    expected = _break(case, release)
    code = main(
        ["audit", *audit_args(release), "--report", str(tmp_path / "r.html"), "--workers", "0"]
        + ["--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("gan-privacy: error: ") and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_warnings_are_printed_with_the_verdict(clean_release, tmp_path: Path, capsys):

    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    (release / "generated" / "bad.png").write_text("x")
    args = ["audit", *audit_args(release), "--report", str(tmp_path / "r.html"), "--quiet"]
    assert main([*args, "--workers", "0", "--skip-bad-images"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 unreadable image(s) were skipped (generated 1)" in out
    assert json.loads((tmp_path / "r.json").read_text())["skipped_images"][0]["path"].endswith(
        "bad.png"
    )


def test_the_readme_documents_every_option():
    """The README's configuration table names each option's three spellings."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for option in OPTIONS:
        flag = option.name.replace("_", "-")
        row = f"| `--{flag}` | `--gan-audit-{flag}` | `gan_audit_{option.name}` |"
        assert row in readme, row
