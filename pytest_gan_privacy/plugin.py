"""The pytest plugin: `pytest --gan-audit`.

Loaded by pytest on every run, so this module imports nothing heavy: torch, timm
and scikit-learn are imported only when an audit runs. Without `--gan-audit` the
plugin adds options and a marker and does nothing else.

Under pytest-xdist, audits run on the workers, which write no files: an audit's
rendered report and summary ride on its test report (xdist sends a report's
attributes to the controller), and the controller writes each report once and shows
the summary. Without xdist, the one process plays both parts.
"""

from __future__ import annotations

import argparse
import html
import os
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest

from .errors import AuditInputError
from .settings import OPTIONS, REQUIRED, AuditSettings, default_of

AUDIT_ITEM_NAME = "gan_privacy_audit"
DEFAULT_REPORT = "gan-audit-report.html"
MARKER_KEYS = sorted(f.name for f in fields(AuditSettings))


@dataclass
class _State:
    """Per-session state, kept in the config's stash."""

    enabled: bool
    base: dict[str, Any]  # settings from the ini file and the command line
    named: tuple[Path, ...]  # output paths the user named (they may replace any file)
    # audits run in this process: settings key -> AuditResult or error message
    results: dict[tuple, Any] = field(default_factory=dict)
    errors: dict[tuple, str] = field(default_factory=dict)
    handed_over: set[tuple] = field(default_factory=set)  # (key, report, json) sent for writing
    # where reports are written (controller): audit -> what the summary shows; paths written
    shown: dict[str, dict] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)


STATE = pytest.StashKey[_State]()
_NAMED = pytest.StashKey[list]()  # on a test item: its output paths the user named
_RESULT = pytest.StashKey[Any]()  # on a test item: its AuditResult (for pytest-html)
_HANDED = pytest.StashKey[list]()  # on a test item: audit outputs for its next test report
REPORT_ATTRIBUTE = "gan_audit"  # the test report attribute that carries them


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gan-audit", "GAN privacy audit (pytest-gan-privacy)")
    group.addoption(
        "--gan-audit",
        action="store_true",
        default=False,
        help="run the membership-inference audit of generated images",
    )
    # every setting: --gan-audit-<name> on the command line, gan_audit_<name> in ini files
    for option in OPTIONS:
        kwargs = {"action": "store_true"} if option.kind == "bool" else {"type": option.parse}
        group.addoption(
            f"--gan-audit-{option.flag}",
            dest=f"gan_audit_{option.name}",
            default=None,
            help=option.describe(),
            **kwargs,
        )
        parser.addini(f"gan_audit_{option.name}", option.describe(), default=None)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args) -> None:
    """With --gan-audit, torch's threads wait passively (runtime.py: shared CPUs); set
    before the conftest files are imported, since one of them may import torch."""
    if getattr(early_config.known_args_namespace, "gan_audit", False):
        from .runtime import prefer_passive_waiting

        prefer_passive_waiting()


def _configured(config: pytest.Config) -> dict[str, Any]:
    """Settings from the ini file and the command line, validated (command line wins).
    Relative paths are relative to the folder pytest started in, or to the ini file."""
    base: dict[str, Any] = {}
    ini_dir = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
    for option in OPTIONS:
        value = config.getoption(f"gan_audit_{option.name}")
        folder = Path(config.invocation_params.dir)
        if value is None:
            value = config.getini(f"gan_audit_{option.name}")
            folder = ini_dir
            if value in (None, "", []):
                continue
            try:
                value = option.parse(str(value).strip())
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini key gan_audit_{option.name}: {exc}") from None
        if option.kind == "path":
            value = folder / value
        base[option.name] = value
    return base


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gan_audit(**settings): per-test audit settings for the gan_audit_* fixtures "
        f"(keys: {', '.join(MARKER_KEYS)})",
    )
    enabled = bool(config.getoption("gan_audit"))
    base = _configured(config) if enabled else {}
    named = tuple(base[k] for k in ("report", "json") if k in base)
    if enabled and "report" not in base:
        # the folder pytest was started in (rootdir can be an input folder's parent)
        base["report"] = Path(config.invocation_params.dir) / DEFAULT_REPORT
    config.stash[STATE] = _State(enabled=enabled, base=base, named=named)
    if enabled and config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlExtras(), "gan-audit-html-extras")
    if enabled and not _is_xdist_worker(config):
        config.pluginmanager.register(_ReportWriter(config), "gan-audit-report-writer")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _state(config: pytest.Config) -> _State:
    return config.stash[STATE]


def pytest_report_header(config: pytest.Config) -> str | None:
    state = _state(config)
    if not state.enabled:
        return None
    b = state.base
    paths = ", ".join(f"{k}={b[k]}" for k in REQUIRED if k in b)
    return (
        f"gan-audit: max F1 {b.get('max_f1', default_of('max_f1'))}, features "
        f"{b.get('features', default_of('features'))}, {paths or 'paths from gan_audit markers'}"
    )


# --- running audits ---------------------------------------------------------------


def _settings_key(settings: AuditSettings) -> tuple:
    """Settings that decide the numbers (not where outputs go)."""
    d = settings.as_dict()
    return tuple((k, str(d[k])) for k in sorted(d) if k not in ("report", "json"))


def _make_settings(state: _State, overrides: dict[str, Any]) -> AuditSettings:
    values = {**state.base, **overrides}
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        flags = ", ".join(f"--gan-audit-{k.replace('_', '-')}" for k in missing)
        raise AuditInputError(
            f"the audit needs the {', '.join(missing)} folder(s): set {flags} or the ini keys "
            f"{', '.join('gan_audit_' + k for k in missing)}"
        )
    return AuditSettings(**values)


def _progress(config: pytest.Config):
    """Progress lines on the terminal, outside pytest's output capture."""
    from .runtime import ProgressPrinter

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.option.verbose < 0 or _is_xdist_worker(config):
        return None  # a worker's output is not shown

    started = []

    def write(text: str) -> None:
        if not started:  # leave the test's progress line alone
            started.append(True)
            text = "\n" + text
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write(text, flush=True)
        else:
            reporter.write(text, flush=True)

    return ProgressPrinter(write, bool(reporter.isatty))  # a bool in older pytest, callable now


def _with_outputs(
    state: _State, settings: AuditSettings, overrides: dict, node_name: str | None
) -> tuple[AuditSettings, list[Path]]:
    """Settings with their output paths, and the paths among them the user named.

    The configured audit writes the configured report; a test whose marker changes
    the settings writes its own `<report>-<test name>.html` unless the marker names one.
    """
    if "report" in overrides:
        report = Path(overrides["report"])
        json_path, named = report.with_suffix(".json"), [report]
    else:
        report = state.base["report"]
        json_path = state.base.get("json") or report.with_suffix(".json")
        named = [p for p in (report, json_path) if p in state.named]
        if node_name is not None and set(overrides) - {"json"}:
            safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in node_name)
            report = report.with_name(f"{report.stem}-{safe}{report.suffix}")
            json_path, named = report.with_suffix(".json"), []
    if "json" in overrides:
        json_path = Path(overrides["json"])
        named.append(json_path)
    return replace(settings, report=report, json=Path(json_path)), named


def run_cached_audit(node: pytest.Item, settings: AuditSettings, named: list[Path]):
    """Run the audit for these settings once per session (per process under xdist) and
    hand its outputs over for writing (see `_ReportWriter`)."""
    from .audit import run_audit
    from .files import check_outputs
    from .report import render_outputs
    from .results import summary_lines

    state = _state(node.config)
    key = _settings_key(settings)
    if key in state.errors:
        raise AuditInputError(state.errors[key])
    if key not in state.results:
        check_outputs([(p, p in named) for p in (settings.report, settings.json)])
        try:
            state.results[key] = run_audit(settings, _progress(node.config))
        except AuditInputError as exc:
            state.errors[key] = str(exc)
            _hand_over(node, {"key": str(key), "error": str(exc)})
            raise
    result = state.results[key]
    outputs = (key, settings.report, settings.json)
    if outputs not in state.handed_over:
        state.handed_over.add(outputs)
        _hand_over(
            node,
            {
                "key": str(key),
                "passed": result.passed,
                "lines": summary_lines(result),
                "warnings": result.warnings,
                "report": str(settings.report),
                "json": str(settings.json),
                "properties": _properties(result),
                "files": render_outputs(result, settings.report, settings.json, named),
            },
        )
    for warning in result.warnings:  # -W error and filterwarnings act on them
        warnings.warn(GanAuditWarning(warning), stacklevel=2)
    return result


def _hand_over(node: pytest.Item, payload: dict) -> None:
    node.stash.setdefault(_HANDED, []).append(payload)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Attach the outputs of audits run in this test phase to its report."""
    outcome = yield
    payloads = item.stash.get(_HANDED, None)
    if payloads:
        setattr(outcome.get_result(), REPORT_ATTRIBUTE, list(payloads))
        payloads.clear()


class _ReportWriter:
    """Writes the audits' reports, each path once, and shows the audits in the
    terminal summary: registered only where reports are written (not on xdist workers)."""

    def __init__(self, config: pytest.Config):
        self.config, self.state = config, _state(config)

    @pytest.hookimpl(tryfirst=True)  # before the terminal and JUnit see the report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .report import write_files

        for payload in getattr(report, REPORT_ATTRIBUTE, ()):
            summary = {k: v for k, v in payload.items() if k != "files"}
            shown = self.state.shown.setdefault(payload["key"], {**summary, "outputs": []})
            files = [
                (path, text, named)
                for path, text, named in payload.get("files", ())
                if path not in self.state.written
            ]
            if not files:
                continue
            try:
                write_files(files)
            except (AuditInputError, OSError) as exc:  # the test fails: a report was lost
                report.outcome = "failed"
                report.longrepr = f"the audit's report was not written: {exc}"
                shown.setdefault("problems", []).append(str(report.longrepr))
                continue
            self.state.written.update(path for path, *_ in files)
            shown["outputs"].append((payload["report"], payload["json"]))
            self._record(payload.get("properties", ()))

    def _record(self, properties) -> None:
        """An audit's numbers as suite-level JUnit properties, valid under every
        junit_family (test-level <properties> are not valid in xunit2)."""
        from _pytest.junitxml import xml_key  # what record_testsuite_property uses

        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            for name, value in properties:
                xml.add_global_property(name, value)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.state.shown:
            return
        terminalreporter.section("GAN privacy audit")
        for shown in self.state.shown.values():
            if "error" in shown:
                terminalreporter.write_line(f"ERROR: {shown['error']}", red=True)
                continue
            colour = {"green": True} if shown["passed"] else {"red": True}
            summary, *details = shown["lines"]
            terminalreporter.write_line(summary, bold=True, **colour)
            for line in details:
                terminalreporter.write_line(line)
            for warning in shown["warnings"]:
                terminalreporter.write_line(f"  warning: {warning}", yellow=True)
            for report, json_path in shown["outputs"]:
                terminalreporter.write_line(f"  report: {report}  json: {json_path}")
            for problem in shown.get("problems", ()):
                terminalreporter.write_line(f"  ERROR: {problem}", red=True)


def _properties(result) -> list[tuple[str, str]]:
    """The key numbers for JUnit XML; a number that could not be measured is empty."""
    m = result.gate

    def text(value) -> str:
        return "" if value is None else str(round(value, 4) if isinstance(value, float) else value)

    return [
        (name, text(value))
        for name, value in (
            ("gan_audit_report", str(result.settings.report)),
            ("gan_audit_verdict", result.verdict),
            ("gan_audit_f1", m.f1),
            ("gan_audit_f1_ci_low", m.f1_ci[0]),
            ("gan_audit_f1_ci_high", m.f1_ci[1]),
            ("gan_audit_chance_f1", m.chance_f1),
            ("gan_audit_max_f1", result.settings.max_f1),
            ("gan_audit_auc", m.auc),
            ("gan_audit_tpr_at_1pct_fpr", m.tpr_at_1pct_fpr),
        )
    ]


class _HtmlExtras:
    """With pytest-html: the verdict and a link to the audit's report as extras of
    each test that recorded an audit. Registered only when pytest-html is loaded."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        outcome = yield
        report = outcome.get_result()
        result = item.stash.get(_RESULT, None)
        if report.when != "call" or result is None:
            return
        from pytest_html import extras

        from .results import summary_line

        path = Path(result.settings.report).resolve()
        link = path.as_uri()
        html_path = item.config.getoption("htmlpath", None)
        if html_path:  # relative, so the link survives moving both reports together
            try:
                link = Path(os.path.relpath(path, Path(html_path).resolve().parent)).as_posix()
            except ValueError:  # another drive on Windows
                pass
        colour = "#145214" if result.passed else "#7a1010"
        report.extras = [
            *getattr(report, "extras", []),
            extras.html(
                f'<p style="color: {colour}"><strong>GAN privacy audit</strong>: '
                f"{html.escape(summary_line(result))}</p>"
            ),
            extras.url(link, name=f"GAN privacy audit report ({result.verdict})"),
        ]


class GanAuditWarning(pytest.PytestWarning):
    """What a reader must know before trusting an audit (unbalanced candidates,
    skipped images...): issued as a warning, so -W error and filterwarnings act on it."""


class LeakageOverLimit(Exception):
    """The audit's F1 is over the limit: the release leaks its training images."""


class GanAuditItem(pytest.Item):
    """The audit test that `pytest --gan-audit` collects by itself."""

    def runtest(self) -> None:
        state = _state(self.config)
        settings, named = _with_outputs(state, _make_settings(state, {}), {}, None)
        result = run_cached_audit(self, settings, named)
        self.stash[_RESULT] = result
        if not result.passed:
            from .results import summary_line

            raise LeakageOverLimit(
                "\n".join([*result.failures, summary_line(result), f"report: {settings.report}"])
            )

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (LeakageOverLimit, AuditInputError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, AUDIT_ITEM_NAME


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, which then applies to it
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    state = _state(config)
    if state.enabled and all(k in state.base for k in REQUIRED):
        items.append(
            GanAuditItem.from_parent(session, name=AUDIT_ITEM_NAME, nodeid=AUDIT_ITEM_NAME)
        )


# --- fixtures for teams that write their own tests ----------------------------------


@pytest.fixture
def gan_audit_settings(request: pytest.FixtureRequest) -> AuditSettings:
    """The audit settings for this test: ini file, command line, then the test's
    `gan_audit` marker. Skips the test unless pytest runs with --gan-audit."""
    state = _state(request.config)
    if not state.enabled:
        pytest.skip("the GAN privacy audit is off: run pytest with --gan-audit")
    marker = request.node.get_closest_marker("gan_audit")
    overrides = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        pytest.fail("the gan_audit marker takes keyword arguments only", pytrace=False)
    unknown = sorted(set(overrides) - set(MARKER_KEYS))
    if unknown:
        pytest.fail(
            f"unknown gan_audit marker argument(s) {', '.join(unknown)}; "
            f"known: {', '.join(MARKER_KEYS)}",
            pytrace=False,
        )
    for option in OPTIONS:  # marker paths are relative to the test file
        if option.kind == "path" and option.name in overrides:
            overrides[option.name] = Path(request.node.path).parent / Path(overrides[option.name])
    try:
        settings = _make_settings(state, overrides)
    except AuditInputError as exc:
        pytest.fail(str(exc), pytrace=False)
    settings, named = _with_outputs(state, settings, overrides, request.node.name)
    request.node.stash[_NAMED] = named
    return settings


@pytest.fixture
def gan_generated_samples(gan_audit_settings: AuditSettings):
    """The generated images (an ImageSet: paths and content hashes, in hash order)."""
    from .images import load_image_set

    try:
        return load_image_set(
            gan_audit_settings.generated, "generated", gan_audit_settings.skip_bad_images
        )
    except AuditInputError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def gan_candidates(gan_audit_settings: AuditSettings):
    """The real candidates: members (used) and non-members (not_used), with labels."""
    from .audit import load_candidates

    try:
        return load_candidates(gan_audit_settings)
    except AuditInputError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def gan_audit_result(request: pytest.FixtureRequest, gan_audit_settings: AuditSettings):
    """The AuditResult for this test's settings (run once per session per settings).

    `result.passed`, `result.f1`, `result.gate` (all metrics), `result.as_dict()`.
    """
    named = request.node.stash.get(_NAMED, [])
    try:
        result = run_cached_audit(request.node, gan_audit_settings, named)
    except AuditInputError as exc:
        pytest.fail(str(exc), pytrace=False)
    request.node.stash[_RESULT] = result
    return result
