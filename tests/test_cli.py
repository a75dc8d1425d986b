"""`gan-privacy audit`: exit status 0 pass, 1 leak, 2 bad input or usage."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import audit_args

from pytest_gan_privacy.cli import main


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
