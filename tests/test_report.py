"""The HTML report: content, same numbers as the JSON, privacy, escaping, pytest-html."""

import json
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import audit_args, settings_for

from pytest_gan_privacy.charts import attack_f1_svg, roc_curve_svg, score_histogram_svg
from pytest_gan_privacy.cli import build_parser
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.report import (
    EXPOSED_SHOWN,
    RISKIEST,
    render_html,
    thumbnail_uri,
    write_outputs,
)
from pytest_gan_privacy.results import result_json

XSS_NAME = "<img src=x onerror=alert(1)>.png"
SECTIONS = (
    "verdict",
    "metrics",
    "attacks",
    "curves",
    "riskiest",
    "exposure",
    "near-copies",
    "power",
    "provenance",
)


@pytest.fixture(scope="module")
def leaky_result(leaky_release):
    return run_audit(settings_for(leaky_release))


@pytest.fixture(scope="module")
def leaky_report(leaky_result, tmp_path_factory) -> tuple[str, dict]:
    """The HTML report and the JSON result of the leaky release, as written to disk."""
    folder = tmp_path_factory.mktemp("report")
    write_outputs(leaky_result, folder / "r.html", folder / "r.json")
    return (folder / "r.html").read_text(), json.loads((folder / "r.json").read_text())


class _Page(HTMLParser):
    """What a test needs from a report: tags with attributes, numbers, the data block."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.numbers: list[tuple[str, str]] = []  # (data-key, shown text)
        self.data_block = ""
        self._key = self._script = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self._key = attrs.get("data-key") if tag == "span" else None
        self._script = attrs.get("id") if tag == "script" else None

    def handle_data(self, data):
        if self._key:
            self.numbers.append((self._key, data))
            self._key = None
        if self._script == "gan-audit-result":
            self.data_block += data


def _lookup(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _data_uris(html: str) -> set[str]:
    return set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html))


def test_report_shows_everything_in_order_verdict_first(leaky_report, leaky_result):
    html, data = leaky_report
    positions = [html.index(f'id="{section}"') for section in SECTIONS]
    assert positions == sorted(positions)
    verdict = html[positions[0] : positions[1]]
    assert "FAIL" in verdict and "over" in verdict and "margin" in verdict
    for text in (
        "95 % interval",
        "chance F1",
        "specificity",
        "ROC AUC",
        "TPR at 0.1 % FPR",
        "Confusion matrix",
        "near-copies of a real candidate",
        "was planted at each level",
        "members exposed at 1 % FPR (expected by chance: ",
        *data["versions"].values(),
        *(i["manifest_sha256"] for i in data["inputs"].values()),
        *(stage for stage in data["timings"]),
    ):
        assert text in html, text
    for name, attack in data["attacks"].items():
        gate = " (gate)" if name == data["gating_attack"] else ""
        row = f'<b>{name}</b>{gate}<div class="desc">{attack["description"]}</div>'
        assert row in html
    assert html.count("<svg") == 3  # attacks, ROC curve, score distributions
    riskiest = sorted(data["candidates"], key=lambda row: -row["score"])[:RISKIEST]
    for row in riskiest:
        assert row["id"] in html and row["sha256"] in html
        assert all(n["id"] in html for n in row["nearest_generated"])
    exposure = html[html.index('id="exposure"') : html.index('id="near-copies"')]
    listed = [i for i in data["exposure"]["exposed"] if i in exposure]
    assert len(listed) == min(EXPOSED_SHOWN, len(data["exposure"]["exposed"])) > 0
    if len(data["exposure"]["exposed"]) > EXPOSED_SHOWN:
        assert "exposed members are shown; the JSON lists them all" in exposure
    assert len(data["candidates"]) == len(leaky_result.candidates) == 60
    assert data["candidates"][0].keys() >= {"id", "sha256", "label", "score", "called_used"}


def test_report_requests_nothing_from_the_network(leaky_report):
    html, _ = leaky_report
    page = _Page(html)
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "srcset", "action", "poster"):
            if name in attrs:
                assert attrs[name].startswith("data:image/png;base64,"), (tag, attrs[name])
        if tag == "script":
            assert attrs == {"type": "application/json", "id": "gan-audit-result"}
    assert "url(" not in html and "@import" not in html and "@font-face" not in html
    assert "default-src 'none'" in html  # and the browser would refuse anything else


def test_json_and_html_carry_the_same_numbers(leaky_report):
    html, data = leaky_report
    page = _Page(html)
    assert json.loads(page.data_block) == data  # the embedded data block is the JSON file
    assert len(page.numbers) > 40
    shown = {key for key, _ in page.numbers}
    assert {"f1", "f1_ci.0", "chance_f1", "margin", "auc", "confusion.tp"} <= shown
    for key, text in page.numbers:
        value = _lookup(data, key)
        if value is None:
            assert text == "n/a", key
        else:
            digits = len(text.partition(".")[2])
            assert text == f"{value:.{digits}f}", (key, text, value)


def test_report_has_no_real_pixels_by_default(leaky_report, leaky_result):
    html, _ = leaky_report
    real = leaky_result.candidates.members.paths + leaky_result.candidates.non_members.paths
    generated = {thumbnail_uri(p) for p in leaky_result.generated.paths}
    shown = _data_uris(html)
    assert shown and shown <= generated
    assert not shown & {thumbnail_uri(p) for p in real}
    assert "No pixels of real images" in html and "contains patient images" not in html
    assert 'data-role="real"' not in html


def test_real_thumbnails_are_opt_in_and_announced(leaky_result):
    settings = replace(leaky_result.settings, report_real_thumbnails=True)
    html = render_html(replace(leaky_result, settings=settings))
    header = html[: html.index('id="verdict"')]
    assert "This report contains patient images" in header
    real = leaky_result.candidates.members.paths + leaky_result.candidates.non_members.paths
    assert len(_data_uris(html) & {thumbnail_uri(p) for p in real}) == RISKIEST
    assert html.count('data-role="real"') == RISKIEST


def test_the_option_is_a_command_line_flag():
    args = build_parser().parse_args(["audit", *audit_args(Path("x")), "--report-real-thumbnails"])
    assert args.report_real_thumbnails is True


def test_file_and_folder_names_are_escaped(leaky_release, leaky_result, tmp_path: Path):
    """Rename the riskiest member and its nearest generated image to HTML, inside a
    folder whose name is HTML too: the report shows the names as text."""
    rows = result_json(leaky_result)["candidates"]
    top = max(range(len(rows)), key=lambda i: rows[i]["score"])
    copy = tmp_path / '"><svg onload=alert(2)>'
    shutil.copytree(leaky_release, copy)
    (copy / "real" / rows[top]["id"]).rename(copy / "real" / "used" / XSS_NAME)
    neighbour = rows[top]["nearest_generated"][0]["id"]
    (copy / "generated" / neighbour).rename(copy / "generated" / XSS_NAME)
    html = render_html(run_audit(settings_for(copy)))
    assert "<img src=x" not in html and "<svg onload" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;.png") >= 2  # candidate, neighbour
    assert "&#34;&gt;&lt;svg onload=alert(2)&gt;" in html  # the folder, in the inputs


def test_charts_are_well_formed_svg_with_escaped_text():
    name = "<script>alert(1)</script>"
    attack = {"f1": 0.7, "f1_ci": [0.6, 0.8]}
    charts = [
        attack_f1_svg({name: attack}, 0.6, name, 0.5),
        roc_curve_svg([0, 0, 1, 1], {name: [0.1, 0.4, 0.35, 0.8]}, {name: 0.75}, (0.5, 0.5)),
        score_histogram_svg([0.35, 0.8], [0.1, 0.4], [0.3, 0.38]),
        score_histogram_svg([0.5], [0.5], [0.5]),  # all equal: still draws
    ]
    for svg in charts:
        ET.fromstring(svg)  # well-formed XML
        assert "<script" not in svg
    assert "&lt;script&gt;" in charts[0] and "&lt;script&gt;" in charts[1]


def test_pytest_html_shows_the_verdict_and_links_the_report(
    pytester: pytest.Pytester, leaky_release
):
    pytest.importorskip("pytest_html")
    flags = [
        f"--gan-audit-generated={leaky_release / 'generated'}",
        f"--gan-audit-used={leaky_release / 'real' / 'used'}",
        f"--gan-audit-not-used={leaky_release / 'real' / 'not_used'}",
    ]
    result = pytester.runpytest("--gan-audit", *flags, "--html=ci/tests.html")
    result.assert_outcomes(failed=1)
    page = (pytester.path / "ci" / "tests.html").read_text()
    assert "GAN privacy audit report (FAIL)" in page
    assert "../gan-audit-report.html" in page  # relative: the two files travel together
    assert "FAIL: leakage F1" in page


def test_report_renders_in_headless_chromium(leaky_report, tmp_path: Path):
    """The page as a browser builds it (skipped without Chromium; see
    benchmarks/report_screenshot.py, which installs it and takes screenshots)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    html, _ = leaky_report
    (tmp_path / "r.html").write_text(html)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                (tmp_path / "r.html").as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    assert 'class="word">FAIL<' in dom
    assert dom.count("<svg") == 3 and dom.count("<img") >= RISKIEST


def test_warnings_and_skipped_images_are_in_the_report(clean_release, tmp_path: Path):
    release = tmp_path / "release"
    shutil.copytree(clean_release, release)
    (release / "generated" / "<i>bad.png").write_text("not an image")
    for extra in sorted((release / "real" / "not_used").iterdir())[10:]:
        extra.unlink()
    html = render_html(run_audit(settings_for(release, skip_bad_images=True)))
    assert html.count('class="banner warn"') == 3
    assert "unbalanced candidates: 30 used vs 10 not_used" in html
    assert "too few candidates to mean much: 30 used and 10 not_used" in html
    assert 'id="left-out"' in html and "&lt;i&gt;bad.png" in html and "<i>bad" not in html


def test_without_bootstrap_no_interval_is_shown_as_one(clean_release):
    """`--bootstrap 0` printed "95% CI 0.531-0.531": a zero-width interval presented as
    measured. It is absent instead, in the JSON, the summary and the report."""
    from pytest_gan_privacy.results import summary_line

    result = run_audit(settings_for(clean_release, features="pixels", bootstrap=0))
    data = result_json(result)
    assert data["f1_ci"] is None
    assert all(a["f1_ci"] is None for a in data["attacks"].values())
    line = summary_line(result)
    assert "no CI: bootstrap off" in line and "95% CI" not in line
    page = _Page(render_html(result))
    shown = [text for key, text in page.numbers if key.endswith("f1_ci")]
    assert shown and set(shown) == {"no interval (bootstrap off)"}
    assert not any(key.endswith(("f1_ci.0", "f1_ci.1")) for key, _ in page.numbers)


def test_a_fail_under_the_f1_limit_names_its_checks_in_the_verdict(leaky_release):
    """A release failed by its near-copies or exposure while its F1 is under the limit
    read "leakage F1 0.49 over the limit 0.60": the verdict says within, and why it fails."""
    result = run_audit(settings_for(leaky_release, features="pixels", max_f1=0.99))
    assert not result.passed and result.gate.f1 <= 0.99
    html = render_html(result)
    verdict = html[html.index('id="verdict"') : html.index('id="metrics"')]
    assert "within the limit" in verdict and "over the limit" not in verdict
    items = re.findall(r"<li>fails because (.*?)</li>", verdict)
    assert len(items) == len(result.failures) >= 1
    assert "better than the limit allows: the release leaks" not in verdict
