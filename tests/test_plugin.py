"""The pytest plugin, driven through pytester like a team would use it."""

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import break_release


def _flags(release: Path) -> list[str]:
    return [
        f"--gan-audit-generated={release / 'generated'}",
        f"--gan-audit-used={release / 'real' / 'used'}",
        f"--gan-audit-not-used={release / 'real' / 'not_used'}",
    ]


def test_gan_audit_collects_and_passes_an_audit_item(pytester: pytest.Pytester, clean_release):
    result = pytester.runpytest("--gan-audit", *_flags(clean_release), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*GAN privacy audit*", "PASS: leakage F1 *", "*report: *"])
    assert (pytester.path / "gan-audit-report.html").is_file()
    assert (pytester.path / "gan-audit-report.json").is_file()


def test_a_leak_fails_with_f1_limit_and_report_path(pytester: pytest.Pytester, leaky_release):
    result = pytester.runpytest("--gan-audit", *_flags(leaky_release), "--junitxml=junit.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*gan_privacy_audit*",
            "leakage F1 0.* is over the limit 0.600",
            "FAIL: leakage F1 0.* (95% CI *, chance *) vs limit 0.600; AUC *",
            "report: *gan-audit-report.html",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "junit.xml").iter("property")
    }
    assert props["gan_audit_verdict"] == "FAIL"
    assert float(props["gan_audit_f1"]) > 0.6
    assert {"gan_audit_auc", "gan_audit_chance_f1", "gan_audit_report"} <= set(props)


def test_ini_keys_configure_the_audit_and_the_command_line_wins(
    pytester: pytest.Pytester, leaky_release
):
    pytester.makeini(f"""
        [pytest]
        gan_audit_generated = {leaky_release / "generated"}
        gan_audit_used = {leaky_release / "real" / "used"}
        gan_audit_not_used = {leaky_release / "real" / "not_used"}
        gan_audit_max_f1 = 0.99
        gan_audit_allow_member_near_copies = true
        gan_audit_exposure_alpha = 0
        gan_audit_report = out/audit.html
    """)
    pytester.runpytest("--gan-audit").assert_outcomes(passed=1)
    assert (pytester.path / "out" / "audit.html").is_file()
    assert (pytester.path / "out" / "audit.json").is_file()
    pytester.runpytest("--gan-audit", "--gan-audit-max-f1=0.5").assert_outcomes(failed=1)


def test_bad_settings_are_usage_errors(pytester: pytest.Pytester, clean_release):
    result = pytester.runpytest("--gan-audit", *_flags(clean_release), "--gan-audit-max-f1=2")
    result.stderr.fnmatch_lines(["*F1 limit must be between 0 and 1*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    pytester.makeini("[pytest]\ngan_audit_features = sift\n")
    result = pytester.runpytest("--gan-audit")
    result.stderr.fnmatch_lines(["*gan_audit_features*unknown features 'sift'*"])


def test_bad_input_fails_the_audit_item_with_a_clear_message(
    pytester: pytest.Pytester, tmp_path: Path
):
    result = pytester.runpytest(
        "--gan-audit",
        f"--gan-audit-generated={tmp_path / 'none'}",
        f"--gan-audit-used={tmp_path / 'u'}",
        f"--gan-audit-not-used={tmp_path / 'n'}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*generated folder*none does not exist*--generated*"])
    assert "Traceback" not in result.stdout.str()


def test_fixtures_and_marker_for_a_suite_of_several_models(
    pytester: pytest.Pytester, leaky_release, clean_release
):
    pytester.makepyfile(f"""
        import pytest

        LEAKY = {str(leaky_release)!r}
        CLEAN = {str(clean_release)!r}

        def paths(root):
            return dict(generated=root + "/generated", used=root + "/real/used",
                        not_used=root + "/real/not_used")

        @pytest.mark.gan_audit(**paths(CLEAN))
        def test_clean_model(gan_audit_result, gan_candidates, gan_generated_samples):
            assert gan_audit_result.passed
            assert len(gan_candidates) == 60 and len(gan_generated_samples) == 150

        LOOSE = dict(max_f1=1.0, allow_member_near_copies=True, exposure_alpha=0)

        @pytest.mark.gan_audit(**paths(LEAKY), **LOOSE)
        def test_leaky_model_within_a_loose_limit(gan_audit_result):
            assert gan_audit_result.gate.auc > 0.8
            assert gan_audit_result.passed

        @pytest.mark.gan_audit(**paths(LEAKY), max_f=0.9)
        def test_typo(gan_audit_result):
            pass
    """)
    result = pytester.runpytest("--gan-audit", "-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unknown gan_audit marker argument(s) max_f*"])
    reports = sorted(p.name for p in pytester.path.glob("gan-audit-report-*.html"))
    assert reports == [
        "gan-audit-report-test_clean_model.html",
        "gan-audit-report-test_leaky_model_within_a_loose_limit.html",
    ]


def test_fixtures_skip_without_the_flag(pytester: pytest.Pytester):
    pytester.makepyfile("def test_it(gan_audit_result):\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*run pytest with --gan-audit*"])


def test_plugin_is_registered_and_imports_nothing_heavy(pytester: pytest.Pytester):
    pytester.makeconftest("""
        import sys
        def pytest_sessionfinish():
            heavy = [m for m in ("torch", "timm", "sklearn") if m in sys.modules]
            print("HEAVY:", heavy)
    """)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-s", "--trace-config")
    result.stdout.fnmatch_lines(["*pytest_gan_privacy.plugin*", "*HEAVY: []*"])


def test_plugin_module_import_is_light():
    code = (
        "import sys, pytest_gan_privacy.plugin as p; "
        "print(sorted(m for m in ('torch', 'timm', 'sklearn', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("case", ["truncated png", "huge image", "same image in used and not_used"])
def test_bad_input_fails_the_audit_item_naming_the_file(
    case, pytester: pytest.Pytester, clean_release, tmp_path: Path
):

    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    expected = break_release(case, release)
    result = pytester.runpytest("--gan-audit", *_flags(release), "--gan-audit-workers=0")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert expected in output and "Traceback" not in output and "site-packages" not in output
    result.stdout.fnmatch_lines(["*GAN privacy audit*", "ERROR: *"])
    assert not (pytester.path / "gan-audit-report.html").exists()


def test_a_default_report_path_never_replaces_a_users_file_under_pytest(
    pytester: pytest.Pytester, clean_release
):
    mine = pytester.path / "gan-audit-report.html"
    mine.write_text("my notes")
    result = pytester.runpytest("--gan-audit", *_flags(clean_release))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gan-audit-report.html exists and was not written by*"])
    assert mine.read_text() == "my notes"
    named = pytester.runpytest("--gan-audit", *_flags(clean_release), f"--gan-audit-report={mine}")
    named.assert_outcomes(passed=1)
    assert "pytest-gan-privacy" in mine.read_text()


def test_a_report_that_cannot_be_written_fails_the_test(pytester: pytest.Pytester, clean_release):
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest(
        "--gan-audit", *_flags(clean_release), "--gan-audit-report=blocker/report.html"
    )
    result.assert_outcomes(failed=1)
    # refused before the audit ran, not after it
    result.stdout.fnmatch_lines(["*report.html cannot be written: *blocker is a file*"])
    assert "PASS" not in result.stdout.str()


def test_warnings_show_in_the_terminal_summary(pytester: pytest.Pytester, clean_release, tmp_path):

    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    for extra in sorted((release / "real" / "not_used").iterdir())[10:]:
        extra.unlink()
    result = pytester.runpytest("--gan-audit", *_flags(release), "--gan-audit-max-f1=0.9")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["PASS: leakage F1 *", "*", "  warning: unbalanced candidates: 30 used vs 10 not_used*"]
    )


def test_under_xdist_the_controller_writes_the_report_once(
    pytester: pytest.Pytester, leaky_release
):
    """Workers run the audits and write nothing; the controller writes each report once
    and shows the verdict."""
    pytest.importorskip("xdist")
    log = pytester.path / "writes.log"
    pytester.makeconftest(f"""
        import pytest_gan_privacy.report as report

        original = report.atomic_write

        def pytest_configure(config):
            role = "worker" if hasattr(config, "workerinput") else "controller"

            def logged(path, *args, **kwargs):
                if str(path).endswith((".html", ".json")):  # not cache entries
                    with open({str(log)!r}, "a") as f:
                        f.write(f"{{role}} {{path}}\\n")
                return original(path, *args, **kwargs)

            report.atomic_write = logged

        def pytest_unconfigure(config):
            report.atomic_write = original
    """)
    pytester.makepyfile("""
        import pytest

        def test_uses_the_configured_audit(gan_audit_result):
            assert gan_audit_result.f1 > 0.6

        @pytest.mark.gan_audit(max_f1=0.99, allow_member_near_copies=True, exposure_alpha=0)
        def test_own_limit(gan_audit_result):
            assert gan_audit_result.passed

        @pytest.mark.parametrize("n", range(4))
        def test_other_work(n):
            pass
    """)
    result = pytester.runpytest(
        "-n",
        "2",
        "--gan-audit",
        *_flags(leaky_release),
        "--gan-audit-workers=0",
        "--gan-audit-features=pixels",  # workers would train the real MAE: irrelevant here
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*GAN privacy audit*", "FAIL: leakage F1 *", "PASS: leakage F1 *"])
    writes = log.read_text().splitlines()
    roles = {line.split()[0] for line in writes}
    paths = [line.split()[1] for line in writes]
    assert roles == {"controller"}, writes
    assert sorted(Path(p).name for p in paths) == [
        "gan-audit-report-test_own_limit.html",
        "gan-audit-report-test_own_limit.json",
        "gan-audit-report.html",
        "gan-audit-report.json",
    ]


def _unbalanced(clean_release: Path, tmp_path: Path) -> Path:
    release = tmp_path / "unbalanced"
    shutil.copytree(clean_release, release)
    for extra in sorted((release / "real" / "not_used").iterdir())[10:]:
        extra.unlink()
    return release


def test_audit_warnings_are_pytest_warnings(pytester: pytest.Pytester, clean_release, tmp_path):
    """-W error and filterwarnings act on them, as on any pytest warning."""
    release = _unbalanced(clean_release, tmp_path)
    flags = ["--gan-audit", *_flags(release), "--gan-audit-max-f1=0.9", "-p", "no:cacheprovider"]
    shown = pytester.runpytest(*flags)
    shown.assert_outcomes(passed=1, warnings=2)  # 10 non-members are too few, too
    shown.stdout.fnmatch_lines(
        [
            "*GanAuditWarning: too few candidates to mean much: 30 used and 10 not_used*",
            "*GanAuditWarning: unbalanced candidates: 30 used vs 10*",
        ]
    )
    strict = pytester.runpytest(*flags, "-W", "error::pytest.PytestWarning")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*too few candidates*"])
    quiet = pytester.runpytest(*flags, "-W", "ignore::pytest_gan_privacy.plugin.GanAuditWarning")
    quiet.assert_outcomes(passed=1, warnings=0)


def test_junit_numbers_are_suite_properties_valid_under_xunit2(
    pytester: pytest.Pytester, leaky_release
):
    result = pytester.runpytest(
        "--gan-audit",
        *_flags(leaky_release),
        "--junitxml=junit.xml",
        "-o",
        "junit_family=xunit2",
        "-W",
        "error::pytest.PytestWarning",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    assert "junit_family" not in result.stdout.str()
    root = ET.parse(pytester.path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite.find("testcase/properties") is None  # not valid in xunit2
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert props["gan_audit_verdict"] == "FAIL"
    assert props["gan_audit_tpr_at_1pct_fpr"] == ""  # 30 non-members cannot measure it


def test_xdist_workers_with_one_audit_train_the_mae_once(pytester: pytest.Pytester, clean_release):
    """Each worker runs the audit its tests need; the MAE is trained by the first and
    read from the cache by the other, which waits on the entry's lock."""
    pytest.importorskip("xdist")
    log = pytester.path / "mae.log"
    pytester.makeconftest(f"""
        from pytest_gan_privacy import encoders, mae

        fit, train = encoders.MAEEncoder.fit, mae.train

        def logged(name, original):
            def wrapper(*args, **kwargs):
                with open({str(log)!r}, "a") as f:
                    f.write(name + "\\n")
                return original(*args, **kwargs)
            return wrapper

        encoders.MAEEncoder.fit = logged("fit", fit)
        mae.train = logged("train", train)
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_needs_the_audit(gan_audit_result, n):
            assert gan_audit_result.passed
    """)
    result = pytester.runpytest(
        "-n",
        "2",
        "--gan-audit",
        *_flags(clean_release),
        "--gan-audit-workers=0",
        "--gan-audit-mae-epochs=1",
        "--gan-audit-mae-max-images=32",
        f"--gan-audit-cache-dir={pytester.path / 'cache'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=5)  # and the configured audit's own test
    calls = log.read_text().split()
    assert calls.count("fit") == 2 and calls.count("train") == 1, calls


# --- the gate fails closed ------------------------------------------------------------


def _flag_names(roles: list[str]) -> set[str]:
    return {f"--gan-audit-{role.replace('_', '-')}" for role in roles}


@pytest.mark.parametrize("given", [[], ["used"], ["used", "not_used"]])
def test_gan_audit_with_an_incomplete_configuration_fails_the_run(
    pytester: pytest.Pytester, clean_release, given
):
    """A CI job whose variables were not set must turn red, never green."""
    pytester.makepyfile("def test_other():\n    pass\n")
    flags = [f for f in _flags(clean_release) if f.split("=")[0] in _flag_names(given)]
    result = pytester.runpytest("--gan-audit", *flags, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    missing = [r for r in ("generated", "used", "not_used") if r not in given]
    result.stdout.fnmatch_lines(
        [f"*--gan-audit is on but the audit has no {', '.join(missing)} folder: nothing was*"]
    )
    result.stdout.fnmatch_lines(["*GAN privacy audit*", "ERROR: --gan-audit is on but*"])
    assert "Traceback" not in result.stdout.str()


def test_under_xdist_an_incomplete_configuration_fails_the_run(
    pytester: pytest.Pytester, clean_release
):
    pytest.importorskip("xdist")
    pytester.makepyfile("def test_other():\n    pass\n")
    used = [f for f in _flags(clean_release) if f.split("=")[0] in _flag_names(["used"])]
    result = pytester.runpytest("-n", "2", "--gan-audit", *used, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the audit has no generated, not_used folder*"])


def test_a_run_in_which_no_audit_ran_fails(pytester: pytest.Pytester, clean_release):
    pytester.makepyfile("def test_other():\n    pass\n")
    flags = ["--gan-audit", *_flags(clean_release), "-p", "no:cacheprovider"]
    result = pytester.runpytest(*flags, "-k", "test_other")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["ERROR: --gan-audit was given but no audit ran*"])
    assert pytester.runpytest(*flags, "--collect-only").ret == pytest.ExitCode.OK


def test_markers_may_give_the_folders_the_configuration_lacks(
    pytester: pytest.Pytester, clean_release
):
    """Shared real data in the ini file, each model's generated images in its marker:
    the suite's own tests carry the audits, and no configured audit test is added."""
    pytester.makeini(f"""
        [pytest]
        gan_audit_used = {clean_release / "real" / "used"}
        gan_audit_not_used = {clean_release / "real" / "not_used"}
        gan_audit_features = pixels
    """)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.gan_audit(generated={str(clean_release / "generated")!r})
        def test_model(gan_audit_result):
            assert gan_audit_result.passed
    """)
    result = pytester.runpytest("--gan-audit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


def test_an_empty_ini_key_is_named(pytester: pytest.Pytester, clean_release):
    pytester.makeini(f"""
        [pytest]
        gan_audit_generated =
        gan_audit_used = {clean_release / "real" / "used"}
        gan_audit_not_used = {clean_release / "real" / "not_used"}
    """)
    result = pytester.runpytest("--gan-audit", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no generated folder*gan_audit_generated is empty there*"])


def _project_beside_its_data(pytester: pytest.Pytester, release: Path, monkeypatch) -> Path:
    """proj/pyproject.toml with a loose limit, and the data beside proj/, as in CI."""
    project = pytester.path / "proj"
    project.mkdir()
    shutil.copytree(release, pytester.path / "data")
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\ngan_audit_max_f1 = "0.99"\ngan_audit_features = "pixels"\n'
        'gan_audit_allow_member_near_copies = "true"\ngan_audit_exposure_alpha = "0"\n'
    )
    monkeypatch.chdir(project)
    return project


def test_ini_values_hold_with_the_equals_form_and_the_space_form_is_refused(
    pytester: pytest.Pytester, leaky_release, monkeypatch
):
    """pytest reads the command line for its ini file before the plugin is loaded, so
    `--gan-audit-used ../data/used` made it choose another rootdir and skip the
    project's pyproject.toml: the leak PASSED at the ini's limit's expense."""
    _project_beside_its_data(pytester, leaky_release, monkeypatch)
    paths = {"generated": "generated", "used": "real/used", "not-used": "real/not_used"}
    equals = [f"--gan-audit-{k}=../data/{v}" for k, v in paths.items()]
    result = pytester.runpytest("--gan-audit", *equals, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)  # the ini's limit, 0.99, was read
    spaced = [a for k, v in paths.items() for a in (f"--gan-audit-{k}", f"../data/{v}")]
    result = pytester.runpytest("--gan-audit", *spaced, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*read no ini file instead of the ini file *proj?pyproject.toml, because it took the "
            "value of --gan-audit-generated (../data/generated) for a test path*"
            "Write the option with '=': --gan-audit-generated=../data/generated*"
        ]
    )


def test_the_readmes_pytest_examples_use_the_equals_form():
    """`--gan-audit-used real/used` would make pytest skip the project's ini file."""
    from pytest_gan_privacy.settings import OPTIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    examples = "\n".join(readme.split("```")[1::2])  # the fenced code blocks
    taking = {o.flag for o in OPTIONS if o.kind != "bool"}
    spaced = [
        match.group(0)
        for match in re.finditer(r"--gan-audit-([a-z-]+)[ \t]+([^\s\\-]\S*)", examples)
        if match.group(1) in taking
    ]
    assert "--gan-audit-used=" in examples and spaced == []


def test_a_marker_with_a_missing_folder_says_so_once(pytester: pytest.Pytester, tmp_path):
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.gan_audit(generated={str(tmp_path / "none")!r}, used={str(tmp_path)!r},
                               not_used={str(tmp_path / "n")!r})
        def test_model(gan_audit_result):
            pass
    """)
    result = pytester.runpytest("--gan-audit", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "During handling of the above exception" not in output
    section = output.split("ERROR at setup of test_model")[1].split("GAN privacy audit")[0]
    assert section.count("does not exist") == 1


def test_pytest_help_prints_every_option(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    text = " ".join(result.stdout.str().split())
    assert "--gan-audit-fail-inconclusive" in text and "fewer than 90% of the planted" in text


# A malformed value per kind of option, for pytest's flags (and, where the ini file
# can hold it, its keys).
PYTEST_MALFORMED = {
    "str": "",
    "folder": "",
    "file": "",
    "output": ".",
    "output_folder": "",
    "fraction": "2",
    "probability": "1",
    "int": "x",
    "choice": "x",
    "bool": "maybe",
    "window": "1",
    "range": "a:b",
}


def test_malformed_pytest_options_and_ini_keys_are_usage_errors(pytester: pytest.Pytester):
    from pytest_gan_privacy.settings import OPTIONS

    assert {o.kind for o in OPTIONS} <= set(PYTEST_MALFORMED)
    for option in OPTIONS:
        value = PYTEST_MALFORMED[option.kind]
        flag = f"--gan-audit-{option.flag}" + ("=yes" if option.kind == "bool" else f"={value}")
        result = pytester.runpytest("--gan-audit", flag, "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (option.name, result.stderr.str())
        assert "Traceback" not in result.stderr.str() + result.stdout.str()
        if value.strip() and option.kind not in ("output",):  # the ini skips empty values
            pytester.makeini(f"[pytest]\ngan_audit_{option.name} = {value}\n")
            result = pytester.runpytest("--gan-audit", "-p", "no:cacheprovider")
            assert result.ret == pytest.ExitCode.USAGE_ERROR, option.name
            result.stderr.fnmatch_lines([f"*ini key gan_audit_{option.name}:*"])
            (pytester.path / "tox.ini").unlink()


def test_a_report_among_the_inputs_fails_before_the_audit(
    pytester: pytest.Pytester, clean_release, tmp_path
):
    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    image = sorted((release / "real" / "used").iterdir())[0]
    before = image.read_bytes()
    result = pytester.runpytest(
        "--gan-audit", *_flags(release), f"--gan-audit-report={image}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is inside the used folder*", "ERROR: the report *"])
    assert image.read_bytes() == before
    assert len(list((release / "real" / "used").iterdir())) == 30


def test_unmeasured_numbers_are_empty_junit_properties(pytester: pytest.Pytester, clean_release):
    result = pytester.runpytest(
        "--gan-audit",
        *_flags(clean_release),
        "--gan-audit-bootstrap=0",
        "--gan-audit-features=pixels",
        "--junitxml=junit.xml",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "junit.xml").iter("property")
    }
    assert props["gan_audit_f1_ci_low"] == props["gan_audit_f1_ci_high"] == ""
    assert props["gan_audit_tpr_at_1pct_fpr"] == ""  # 30 non-members cannot measure it
    assert "None" not in props.values()


def test_a_marker_with_an_empty_path_is_refused(pytester: pytest.Pytester, clean_release):
    """An empty marker path would have meant the test file's own folder."""
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.gan_audit(generated="", used={str(clean_release / "real/used")!r},
                               not_used={str(clean_release / "real/not_used")!r})
        def test_model(gan_audit_result):
            pass
    """)
    result = pytester.runpytest("--gan-audit", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*gan_audit marker: the generated path is empty*"])
