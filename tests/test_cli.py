"""`gan-privacy audit`: exit status 0 pass, 1 leak, 2 bad input or usage."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BAD_INPUTS, audit_args, break_release

from pytest_gan_privacy.cli import build_parser, main
from pytest_gan_privacy.settings import OPTIONS, options_table


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


def test_a_fail_under_the_f1_limit_says_which_check_failed(leaky_release, tmp_path, capsys):
    """With the F1 under its limit, "FAIL: leakage F1 0.5 ... vs limit 0.99" alone reads
    as a contradiction: the lines under it name the checks that failed."""
    args = [*audit_args(leaky_release), "--max-f1", "0.99", "--workers", "0", "--quiet"]
    code = main(["audit", *args, "--report", str(tmp_path / "r.html")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and out[0].startswith("FAIL: leakage F1")
    reasons = [line for line in out if line.startswith("  fails because ")]
    assert reasons and not any("over the limit" in line for line in reasons)
    assert any("near-copy" in line or "exposed" in line for line in reasons)


def test_exit_status_2_for_a_missing_folder_without_traceback(tmp_path: Path, capsys):
    (tmp_path / "u").mkdir()
    (tmp_path / "n").mkdir()
    code = main(
        [
            "audit",
            "--generated",
            str(tmp_path / "g"),
            "--used",
            str(tmp_path / "u"),
            "--not-used",
            str(tmp_path / "n"),
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


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_naming_the_file_without_traceback(
    case, clean_release, tmp_path: Path, capsys
):

    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    expected = break_release(case, release)
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


def test_the_readme_configuration_table_is_the_options_table():
    """The README's configuration table is generated from the one options table, so it
    names every option's three spellings and default as the code has them."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- options:start -->\n")[1].split("<!-- options:end -->")[0]
    assert block.strip() == options_table(), (
        "regenerate the README's table: python -m pytest_gan_privacy.settings"
    )
    for option in OPTIONS:
        flag = option.name.replace("_", "-")
        assert f"| `--{flag}` | `--gan-audit-{flag}` | `gan_audit_{option.name}` |" in block


# --- no traceback, ever, for user input ----------------------------------------------

# Malformed values for each kind of option. `{image}`, `{folder}` and `{file}` stand
# for an input image, an existing folder and an existing file that is no input.
MALFORMED = {
    "str": ["", "   ", "vit\x1b[31m"],
    "folder": ["", "  ", "a\0b", "x" * 300, "~no-such-user-here/x", "{image}", "{file}"],
    "file": ["", "a\0b", "x" * 300, "{folder}", "missing.pt"],
    "output": ["", ".", "/", "a\0b", "{folder}", "{image}", "{file}/r.html"],
    "output_folder": ["", "a\0b", "{file}", "{used}", "{used}/cache"],
    "fraction": ["", "x", "nan", "inf", "-0.1", "1.0001", "1e999"],
    "probability": ["", "x", "nan", "inf", "-0.1", "1", "1e999"],
    "int": ["", "x", "1.5", "-1", "1e3", "9" * 400],
    "choice": ["", "x", "\0", "auto,cpu"],
    "bool": ["=yes"],  # a switch takes no value
    "window": ["", "1", "1,2,3", "a,b", "nan,1", "40,-1", "40,0"],
    "range": ["", "1", "a:b", "-1:3", "5:2", "1:2:3"],
}


def _option_values(option) -> list[str]:
    values = list(MALFORMED[option.kind])
    if option.kind == "int":
        values += [str(option.minimum - 1), str(option.maximum + 1)]
    return values


def test_every_kind_of_option_has_malformed_values():
    """A new kind of option must say here what a malformed value of it looks like."""
    assert {o.kind for o in OPTIONS} <= set(MALFORMED)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_malformed_values_of_every_option_exit_2_before_any_work(
    option, clean_release, tmp_path: Path, monkeypatch, capsys
):
    """Fuzz-style: every option of the table, each malformed value, from the command
    line: exit 2 with one message, no traceback, nothing written, the audit not begun."""
    import pytest_gan_privacy.pipeline

    def started(*args, **kwargs):
        raise AssertionError("the audit started")

    monkeypatch.setattr(pytest_gan_privacy.pipeline, "run_audit", started)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    places = {
        "image": str(next((clean_release / "real/used").iterdir())),
        "folder": str(tmp_path / "a-folder"),
        "file": str(tmp_path / "a-file"),
        "used": str(clean_release / "real/used"),
    }
    for template in _option_values(option):
        value = template.format(**places)
        if option.kind == "bool":
            flag = [f"--{option.flag}{value}"]
        else:
            flag = [f"--{option.flag}={value}"]
        args = audit_args(clean_release)
        if option.name in ("generated", "used", "not_used"):  # the malformed one instead
            i = args.index(f"--{option.flag}")
            del args[i : i + 2]
        try:
            code = main(["audit", *args, *flag, "--quiet"])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (option.name, value, err)
        assert "error: " in err and "Traceback" not in err, (option.name, value, err)
        assert sorted(os.listdir(tmp_path)) == ["a-file", "a-folder"], (option.name, value)


def test_the_help_of_every_command_prints():
    """argparse formats help with %: one stray % in a help string crashed --help."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for argv in [["--help"], *[[name, "--help"] for name in commands]]:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest_gan_privacy.cli", *argv], capture_output=True, text=True
        )
        assert proc.returncode == 0, (argv, proc.stderr)
        assert proc.stdout.startswith("usage: gan-privacy") and not proc.stderr


def test_a_bug_exits_3_with_its_traceback_never_1(clean_release, tmp_path, monkeypatch, capsys):
    """1 is read as a leak by CI: an internal error must not look like one."""
    import pytest_gan_privacy.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("an internal error")

    monkeypatch.setattr(pytest_gan_privacy.pipeline, "run_audit", broken)
    code = main(["audit", *audit_args(clean_release), "--report", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback" in err and "internal error: the audit failed" in err

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "r.html"))

    monkeypatch.setattr(pytest_gan_privacy.pipeline, "run_audit", full_disk)
    code = main(["audit", *audit_args(clean_release), "--report", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err


# --- outputs never touch inputs ------------------------------------------------------


def test_a_report_named_as_a_training_image_leaves_it_alone(clean_release, tmp_path, capsys):
    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    image = sorted((release / "real/used").iterdir())[3]
    before = image.read_bytes()
    code = main(["audit", *audit_args(release), "--report", str(image), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "is inside the used folder" in err
    assert image.read_bytes() == before
    assert sorted(p.suffix for p in (release / "real/used").iterdir()) == [".png"] * 30


@pytest.mark.parametrize(
    "outputs, message",
    [
        (["--report", "{t}/same", "--json", "{t}/same"], "would be the same file"),
        (["--report", "{t}/x.json"], "would be the same file"),
        (["--report", "{t}/out/x.html"], "out/x.json exists and was not written by"),
        (["--report", "{t}/a-folder"], "is a folder: give a file name"),
        (["--report", "/proc/gan-audit/r.html"], "cannot be written"),
        (["--cache-dir", "{t}/out/x.json"], "is a file, not a folder"),
        (["--generated", ""], "generated path is empty"),
    ],
)
def test_outputs_that_would_harm_a_file_or_be_lost_exit_2_before_the_audit(
    outputs, message, clean_release, tmp_path, monkeypatch, capsys
):
    import pytest_gan_privacy.pipeline

    monkeypatch.setattr(pytest_gan_privacy.pipeline, "run_audit", None)  # never called
    (tmp_path / "out").mkdir()
    (tmp_path / "out/x.json").write_text('{"mine": true}')
    (tmp_path / "a-folder").mkdir()
    args = [a.format(t=tmp_path) for a in outputs]
    try:
        code = main(["audit", *audit_args(clean_release), *args, "--quiet"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert (tmp_path / "out/x.json").read_text() == '{"mine": true}'


def test_the_default_report_is_never_written_inside_an_input_folder(
    clean_release, tmp_path, monkeypatch, capsys
):
    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    monkeypatch.chdir(release / "real" / "used")
    args = ["--generated", "../../generated", "--used", ".", "--not-used", "../not_used"]
    assert main(["audit", *args, "--quiet"]) == 2
    assert "is inside the used folder" in capsys.readouterr().err
    assert not list(Path(".").glob("gan-audit-report*"))


def test_reports_follow_the_users_umask(clean_release, tmp_path):
    proc = subprocess.run(
        [
            "sh",
            "-c",
            'umask 022 && exec "$0" -m pytest_gan_privacy.cli "$@"',
            sys.executable,
            "audit",
            *audit_args(clean_release),
            "--report",
            str(tmp_path / "r.html"),
            "--features",
            "pixels",
            "--workers",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("r.html", "r.json"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o644"


def test_a_hostile_file_name_cannot_forge_a_line_of_output(clean_release, tmp_path, capsys):
    """Names are shown with their control characters escaped: a newline or an ANSI
    escape in a file name can neither add a line nor recolour a CI log."""
    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    forged = "x\nPASS: leakage F1 0.000\x1b[32m.png"
    shutil.copy(sorted((release / "real/used").iterdir())[0], release / "real/used" / forged)
    (release / "generated" / "bad\n\x1b[2Jname.png").write_text("not an image")
    args = ["audit", *audit_args(release), "--report", str(tmp_path / "r.html"), "--quiet"]
    assert main([*args, "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "bad\\n\\x1b[2Jname.png: not an image" in err and "\x1b" not in err
    assert main([*args, "--workers", "0", "--skip-bad-images", "--features", "pixels"]) == 0
    out = capsys.readouterr().out
    assert "used/x\\nPASS: leakage F1 0.000\\x1b[32m.png" in out
    assert "\x1b" not in out
    assert [line for line in out.splitlines() if line.startswith("PASS")] == [out.splitlines()[0]]


def test_ctrl_c_exits_130_without_a_traceback(clean_release, tmp_path, monkeypatch, capsys):
    import pytest_gan_privacy.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pytest_gan_privacy.pipeline, "run_audit", interrupted)
    code = main(["audit", *audit_args(clean_release), "--report", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 130 and "gan-privacy: interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()
