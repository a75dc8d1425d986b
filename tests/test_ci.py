"""The gate where teams look: the Markdown summary (a file, and the CI job's summary
page), and a baseline across releases audited against the same candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import audit_args

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.synthetic import make_release

FAST = ["--features", "pixels", "--quiet"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    """Two releases of one model family against the same candidates (one seed: the same
    members and non-members), a clean one and a leaky one; and a release of others."""
    root = tmp_path_factory.mktemp("releases")
    same = dict(n_members=30, n_non_members=30, n_generated=120, seed=7)
    return {
        "clean": make_release(root / "clean", leaky=False, **same),
        "leaky": make_release(root / "leaky", leaky=True, **same),
        "other": make_release(root / "other", leaky=False, **{**same, "seed": 8}),
    }


def audit(release: Path, out: Path, *more: str) -> tuple[int, dict | None]:
    status = main(
        ["audit", *audit_args(release), *FAST, *more]
        + ["--report", str(out / "r.html"), "--json", str(out / "r.json")]
    )
    path = out / "r.json"
    return status, json.loads(path.read_text()) if path.exists() else None


def test_the_summary_holds_the_verdict_and_key_numbers_and_no_image_name(
    releases, tmp_path, monkeypatch
):
    job = tmp_path / "job-summary.md"
    job.write_text("earlier steps' summary\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job))
    summary = tmp_path / "summary.md"
    status, data = audit(releases["leaky"], tmp_path / "out", "--summary-md", str(summary))
    assert status == 1
    text = summary.read_text()
    for expected in (
        ":x: GAN privacy audit: FAIL",
        "**Fails because**",
        "- leakage F1",
        "| Leakage F1 (per image) | **",
        "a labels-blind guess gets",
        "| AUC |",
        "| TPR at 1% FPR |",
        "| Members exposed at 1.0% FPR |",
        "| Near-copies |",
        "| Power check |",
        f"Report: `{tmp_path / 'out' / 'r.html'}`",
    ):
        assert expected in text, expected
    names = {row["id"].split("/", 1)[1] for row in data["candidates"]}
    names |= {p.name for p in (releases["leaky"] / "generated").iterdir()}
    assert not any(name in text for name in names)  # no image, so no patient, named
    assert "data:image" not in text and "<img" not in text
    assert job.read_text() == "earlier steps' summary\n" + text + "\n"  # appended, once


def test_under_pytest_the_controller_writes_the_summary_once(
    pytester, releases, tmp_path, monkeypatch
):
    release = releases["clean"]
    job = tmp_path / "job-summary.md"
    pytester.makeini(
        f"""
        [pytest]
        gan_audit_generated = {release / "generated"}
        gan_audit_used = {release / "real" / "used"}
        gan_audit_not_used = {release / "real" / "not_used"}
        gan_audit_features = pixels
        gan_audit_summary_md = {tmp_path / "summary.md"}
        """
    )
    pytester.makepyfile(
        test_more="""
        import pytest

        def test_one(gan_audit_result):
            assert gan_audit_result.passed

        def test_two(gan_audit_result):
            assert gan_audit_result.passed
        """
    )
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job))
    result = pytester.runpytest("--gan-audit", "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert job.read_text().count("GAN privacy audit: PASS") == 1  # one audit, one summary
    assert (tmp_path / "summary.md").read_text().count("GAN privacy audit: PASS") == 1


def test_a_baseline_of_the_same_candidates_shows_each_change_and_can_fail_the_gate(
    releases, tmp_path, capsys
):
    status, before = audit(releases["clean"], tmp_path / "before")
    assert status == 0
    baseline = str(tmp_path / "before" / "r.json")
    status, after = audit(releases["leaky"], tmp_path / "after", "--baseline", baseline)
    out = capsys.readouterr().out
    b = after["baseline"]
    assert b["comparable"] and b["path"] == baseline and b["verdict"] == "PASS"
    assert b["changes"]["f1"] == {
        "label": "leakage F1",
        "count": False,
        "before": before["f1"],
        "after": after["f1"],
        "change": after["f1"] - before["f1"],
    }
    assert b["changes"]["near_copies"]["before"] == before["near_copies"]["count"]
    assert "since the baseline (PASS, " in out and "leakage F1 " in out
    html = (tmp_path / "after" / "r.html").read_text()
    assert 'id="baseline"' in html and "Since the previous release" in html
    # the same numbers, gated: the F1 grew by far more than 0.05
    status, gated = audit(
        releases["leaky"], tmp_path / "gated", "--baseline", baseline, "--max-f1", "1",
        "--allow-member-near-copies", "--exposure-alpha", "0", "--fail-on-regression", "0.05",
    )  # fmt: skip
    assert status == 1 and len(gated["failures"]) == 1
    assert gated["failures"][0].startswith("it leaks more than the previous release (leakage F1")
    # a release that leaks no more passes the same gate
    status, _ = audit(
        releases["clean"], tmp_path / "again", "--baseline", baseline,
        "--fail-on-regression", "0.05",
    )  # fmt: skip
    assert status == 0


def test_a_baseline_of_other_candidates_compares_nothing_and_says_so(releases, tmp_path):
    audit(releases["other"], tmp_path / "other")
    baseline = str(tmp_path / "other" / "r.json")
    status, data = audit(
        releases["clean"], tmp_path / "now", "--baseline", baseline, "--fail-on-regression", "0"
    )
    assert status == 0 and not data["baseline"]["comparable"] and data["baseline"]["changes"] == {}
    assert any(
        "audited other candidates" in w and "nothing is compared" in w for w in data["warnings"]
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fail-on-regression", "0.02"], "--fail-on-regression compares with a previous audit"),
        (["--baseline", "{missing}"], "does not exist"),
        (["--baseline", "{not_json}"], "cannot be read as a JSON result"),
        (["--baseline", "{other_json}"], "is not an audit's JSON result"),
        (["--fail-on-regression", "2", "--baseline", "{not_json}"], "between 0 and 1"),
    ],
)
def test_a_bad_baseline_is_refused_before_any_work(args, says, releases, tmp_path, capsys):
    (tmp_path / "not.json").write_text("{ not json")
    (tmp_path / "other.json").write_text('{"f1": 0.5}')
    paths = {
        "missing": tmp_path / "missing.json",
        "not_json": tmp_path / "not.json",
        "other_json": tmp_path / "other.json",
    }
    args = [a.format(**paths) for a in args]
    try:
        status, _ = audit(releases["clean"], tmp_path / "out", *args)
    except SystemExit as exc:  # argparse's own refusal of a malformed value
        status = exc.code
    assert status == 2 and says in capsys.readouterr().err
