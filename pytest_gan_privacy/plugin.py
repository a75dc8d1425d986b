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
import shlex
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest

from .errors import AuditInputError
from .settings import DEFAULT_REPORT, OPTIONS, REQUIRED, AuditSettings, default_of

AUDIT_ITEM_NAME = "gan_privacy_audit"
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
    # where the settings came from, for messages: the ini file read, and its empty keys
    ini: str = ""
    empty_ini_keys: tuple[str, ...] = ()


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


def _configured(config: pytest.Config, empty: list[str] | None = None) -> dict[str, Any]:
    """Settings from the ini file and the command line, validated (command line wins).
    Relative paths are relative to the folder pytest started in, or to the ini file.
    `empty` collects the ini keys that are present but empty (not configured)."""
    base: dict[str, Any] = {}
    ini_dir = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
    for option in OPTIONS:
        value = config.getoption(f"gan_audit_{option.name}")
        folder = Path(config.invocation_params.dir)
        if value is None:
            value = config.getini(f"gan_audit_{option.name}")
            folder = ini_dir
            if value in (None, "", []):
                if value is not None and empty is not None:
                    empty.append(f"gan_audit_{option.name}")
                continue
            try:
                value = option.parse(str(value).strip())
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini key gan_audit_{option.name}: {exc}") from None
        if option.is_path:
            value = folder / value
        base[option.name] = value
    return base


def _ini_description(config: pytest.Config) -> str:
    if config.inipath:
        return f"the ini file {config.inipath}"
    return f"no ini file, none was found from its rootdir {config.rootpath}"


def _space_form_values(args: list[str]) -> list[tuple[str, str]]:
    """(flag, value) of the --gan-audit-* options written `--flag value`: pytest reads
    the command line for its rootdir and ini file before this plugin is loaded, so it
    takes such a value for a test path (the `--flag=value` form is left out)."""
    flags = {f"--gan-audit-{o.flag}" for o in OPTIONS if o.kind != "bool"}
    return [
        (token, args[i + 1])
        for i, token in enumerate(args[:-1])
        if token in flags and not args[i + 1].startswith("-")
    ]


def _setup_without(config: pytest.Config) -> tuple[Any, Any] | None:
    """The (rootdir, ini file) pytest would have chosen had it known the values of our
    options for what they are; None when this pytest's private API is not the one
    known here."""
    import inspect

    try:
        from _pytest.config.findpaths import determine_setup

        wanted = {
            "inifile": config.option.inifilename,
            "override_ini": config.option.override_ini,
            "args": [str(a) for a in (config.option.file_or_dir or [])],
            "rootdir_cmd_arg": config.option.rootdir or None,
            "invocation_dir": Path(config.invocation_params.dir),
            "config": config,
        }
        accepted = inspect.signature(determine_setup).parameters
        found = determine_setup(**{k: v for k, v in wanted.items() if k in accepted})
        return Path(found[0]), (None if found[1] is None else Path(found[1]))
    except Exception:  # noqa: BLE001 - another pytest: fall back to a plainer check
        return None


def _check_rootdir(config: pytest.Config) -> None:
    """Refuse a run whose rootdir and ini file pytest chose from the value of one of our
    options (`--gan-audit-used ../data/used`): the project's ini file, with its limit
    and paths, would be silently ignored, and pytest's cache written in a data folder."""
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    values = _space_form_values([str(a) for a in args])
    if not values:
        return
    expected = _setup_without(config)
    actual = (Path(config.rootpath), None if config.inipath is None else Path(config.inipath))
    if expected == actual:
        return
    if expected is None and not any(os.path.exists(v) for _, v in values):
        return  # no value names a path: pytest cannot have taken one for a test path
    fix = " ".join(f"{flag}={value}" for flag, value in values)
    read = f"the ini file {actual[1]}" if actual[1] else "no ini file"
    meant = ""
    if expected is not None:
        meant = " instead of " + (
            f"the ini file {expected[1]}" if expected[1] else f"the rootdir {expected[0]}"
        )
    raise pytest.UsageError(
        f"pytest chose its rootdir ({actual[0]}) and read {read}{meant}, because it took "
        f"the value of {values[0][0]} ({values[0][1]}) for a test path: it reads the command "
        "line for its ini file before this plugin is loaded. The project's gan_audit_* "
        f"settings would be ignored. Write the option with '=': {fix}"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gan_audit(**settings): per-test audit settings for the gan_audit_* fixtures "
        f"(keys: {', '.join(MARKER_KEYS)})",
    )
    if not _is_xdist_worker(config):
        _check_rootdir(config)
    enabled = bool(config.getoption("gan_audit"))
    empty: list[str] = []
    base = _configured(config, empty) if enabled else {}
    named = tuple(base[k] for k in ("report", "json") if k in base)
    if enabled and "report" not in base:
        # the folder pytest was started in (rootdir can be an input folder's parent)
        base["report"] = Path(config.invocation_params.dir) / DEFAULT_REPORT
    config.stash[STATE] = _State(
        enabled=enabled,
        base=base,
        named=named,
        ini=_ini_description(config),
        empty_ini_keys=tuple(empty),
    )
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
        flags = ", ".join(f"--gan-audit-{k.replace('_', '-')}=FOLDER" for k in missing)
        keys = [f"gan_audit_{k}" for k in missing]
        empty = [k for k in keys if k in state.empty_ini_keys]
        why = f" ({', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty there)"
        raise AuditInputError(
            f"--gan-audit is on but the audit has no {', '.join(missing)} folder: nothing "
            f"was audited. Set {flags}, or the ini key(s) {', '.join(keys)} (pytest read "
            f"{state.ini}{why if empty else ''}), or a gan_audit marker's arguments"
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
    outputs = (key, settings.report, settings.json)
    if outputs not in state.handed_over:  # before any work: outputs apart from inputs
        try:
            check_outputs(
                [
                    (settings.report, settings.report in named, "report"),
                    (settings.json, settings.json in named, "JSON"),
                ],
                settings.inputs(),
            )
        except AuditInputError as exc:
            _hand_over(node, {"key": str(outputs), "error": str(exc)})
            raise
    if key not in state.results:
        try:
            state.results[key] = run_audit(settings, _progress(node.config))
        except AuditInputError as exc:
            state.errors[key] = str(exc)
            _hand_over(node, {"key": str(key), "error": str(exc)})
            raise
    result = state.results[key]
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
        self.no_audit: str | None = None  # why the run failed though no audit failed

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        """Fail closed: with --gan-audit, a run in which no audit ran (every audit test
        deselected or skipped, a marker test that never asked for the result) fails."""
        outcome = yield
        if outcome.excinfo is not None or self.config.option.collectonly or self.state.shown:
            return
        self.no_audit = (
            "--gan-audit was given but no audit ran, so nothing was checked: run the "
            f"{AUDIT_ITEM_NAME} test (is it deselected by -k or -m?), or a test that uses "
            "the gan_audit_result fixture"
        )
        session.testsfailed += 1

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
        if self.config.option.collectonly:
            terminalreporter.section("GAN privacy audit")
            terminalreporter.write_line(
                "--collect-only: no audit ran, so nothing was checked", yellow=True
            )
            return
        if not self.state.shown and self.no_audit is None:
            return
        terminalreporter.section("GAN privacy audit")
        if self.no_audit is not None:
            terminalreporter.write_line(f"ERROR: {self.no_audit}", red=True)
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
            ("gan_audit_f1_ci_low", None if m.f1_ci is None else m.f1_ci[0]),
            ("gan_audit_f1_ci_high", None if m.f1_ci is None else m.f1_ci[1]),
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
        try:
            configured = _make_settings(state, {})
        except AuditInputError as exc:  # incomplete or bad settings: shown in the summary
            _hand_over(self, {"key": "configuration", "error": str(exc)})
            raise
        settings, named = _with_outputs(state, configured, {}, None)
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
    """With --gan-audit, the configured audit is a test of its own. It is left out only
    when the configuration lacks a folder and tests of the suite's own ask for audits
    (their markers give the folders); otherwise it runs, and fails if a folder is
    missing: a misconfigured gate turns red, never green."""
    state = _state(config)
    if not state.enabled:
        return
    complete = all(k in state.base for k in REQUIRED)
    own_audits = any("gan_audit_settings" in getattr(i, "fixturenames", ()) for i in items)
    if complete or not own_audits:
        items.append(
            GanAuditItem.from_parent(session, name=AUDIT_ITEM_NAME, nodeid=AUDIT_ITEM_NAME)
        )


# --- fixtures for teams that write their own tests ----------------------------------


def _fail(exc: AuditInputError):
    """Fail the test with the message alone: raised from None, so pytest does not show
    it twice ("During handling of the above exception...")."""
    raise pytest.fail.Exception(str(exc), pytrace=False) from None


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
        if option.is_path and option.name in overrides:
            try:  # validated before joining: an empty path would become the test's folder
                value = option.parse(overrides[option.name])
            except argparse.ArgumentTypeError as exc:
                pytest.fail(f"gan_audit marker: {exc}", pytrace=False)
            overrides[option.name] = Path(request.node.path).parent / value
    try:
        settings = _make_settings(state, overrides)
    except AuditInputError as exc:
        _fail(exc)
    settings, named = _with_outputs(state, settings, overrides, request.node.name)
    request.node.stash[_NAMED] = named
    return settings


@pytest.fixture
def gan_generated_samples(gan_audit_settings: AuditSettings):
    """The generated images (an ImageSet: paths and content hashes, in hash order)."""
    from .images import load_image_set
    from .medical import DecodeOptions

    try:
        return load_image_set(
            gan_audit_settings.generated,
            "generated",
            gan_audit_settings.skip_bad_images,
            DecodeOptions.from_settings(gan_audit_settings),
        )
    except AuditInputError as exc:
        _fail(exc)


@pytest.fixture
def gan_candidates(gan_audit_settings: AuditSettings):
    """The real candidates: members (used) and non-members (not_used), with labels."""
    from .audit import load_candidates

    try:
        return load_candidates(gan_audit_settings)
    except AuditInputError as exc:
        _fail(exc)


@pytest.fixture
def gan_audit_result(request: pytest.FixtureRequest, gan_audit_settings: AuditSettings):
    """The AuditResult for this test's settings (run once per session per settings).

    `result.passed`, `result.f1`, `result.gate` (all metrics), `result.as_dict()`.
    """
    named = request.node.stash.get(_NAMED, [])
    try:
        result = run_cached_audit(request.node, gan_audit_settings, named)
    except AuditInputError as exc:
        _fail(exc)
    request.node.stash[_RESULT] = result
    return result
