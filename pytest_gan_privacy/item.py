"""The audit under pytest: the test item `pytest --gan-audit` collects by itself, and
running an audit once per session for it and for the fixtures (item and fixtures share
`run_cached_audit`). Heavy modules are imported only when an audit runs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import AuditInputError
from .outcome import AuditOutcome
from .session import (
    is_xdist_worker,
    make_settings,
    session_state,
    settings_key,
    with_outputs,
)
from .settings import AuditSettings, OutputKind

if TYPE_CHECKING:
    from .result import AuditResult

AUDIT_ITEM_NAME = "gan_privacy_audit"
RESULT = pytest.StashKey[Any]()  # on a test item: its AuditResult (for pytest-html)
HANDED = pytest.StashKey[list]()  # on a test item: outcomes for its next test report


class GanAuditWarning(pytest.PytestWarning):
    """What a reader must know before trusting an audit (unbalanced candidates,
    skipped images...): issued as a warning, so -W error and filterwarnings act on it."""


class LeakageOverLimit(Exception):
    """The gate fails: the release leaks its training images."""


class GanAuditItem(pytest.Item):
    """The audit test that `pytest --gan-audit` collects by itself."""

    def runtest(self) -> None:
        state = session_state(self.config)
        try:
            configured = make_settings(state, {})
        except AuditInputError as exc:  # incomplete or bad settings: shown in the summary
            hand_over(self, AuditOutcome(key="configuration", error=str(exc)))
            raise
        settings, named = with_outputs(state, configured, {}, None)
        result = run_cached_audit(self, settings, named)
        self.stash[RESULT] = result
        if not result.passed:
            from .results import summary_line

            raise LeakageOverLimit(
                "\n".join([*result.failures, summary_line(result), f"report: {settings.report}"])
            )

    def repr_failure(self, excinfo, style=None):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, (LeakageOverLimit, AuditInputError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, AUDIT_ITEM_NAME


def run_cached_audit(node: pytest.Item, settings: AuditSettings, named: list[Path]) -> AuditResult:
    """Run the audit for these settings once per session (per process under xdist) and
    hand its outcome over for showing and writing (reporting.ReportWriter)."""
    from .files import check_outputs
    from .pipeline import run_audit

    state = session_state(node.config)
    key = settings_key(settings)
    if key in state.errors:
        raise AuditInputError(state.errors[key])
    outputs = (key, settings.report, settings.json)
    if outputs not in state.handed_over:  # before any work: outputs apart from inputs
        try:
            check_outputs(
                [
                    (settings.report, settings.report in named, OutputKind.REPORT),
                    (settings.json, settings.json in named, OutputKind.JSON),
                    (settings.summary_md, True, OutputKind.SUMMARY),
                ],
                settings.inputs(),
            )
        except AuditInputError as exc:
            hand_over(node, AuditOutcome(key=str(outputs), error=str(exc)))
            raise
    if key not in state.results:
        try:
            state.results[key] = run_audit(settings, _progress(node.config))
        except AuditInputError as exc:
            state.errors[key] = str(exc)
            hand_over(node, AuditOutcome(key=str(key), error=str(exc)))
            raise
    result = state.results[key]
    if outputs not in state.handed_over:
        state.handed_over.add(outputs)
        hand_over(node, _outcome(str(key), result, settings, named))
    for warning in result.warnings:  # -W error and filterwarnings act on them
        warnings.warn(GanAuditWarning(warning), stacklevel=2)
    return result


def _outcome(
    key: str, result: AuditResult, settings: AuditSettings, named: list[Path]
) -> AuditOutcome:
    from .report import render_outputs
    from .results import result_json, summary_lines
    from .summary import summary_markdown

    named = [*named, *([settings.summary_md] if settings.summary_md else [])]
    files = render_outputs(result, settings.report, settings.json, named, settings.summary_md)
    return AuditOutcome(
        key=key,
        passed=result.passed,
        lines=summary_lines(result),
        warnings=list(result.warnings),
        report=str(settings.report),
        json=str(settings.json),
        properties=junit_properties(result),
        files=[(str(path), text, by_user) for path, text, by_user in files],
        job_summary=summary_markdown(result_json(result), str(settings.report)),
    )


def hand_over(node: pytest.Item, outcome: AuditOutcome) -> None:
    """Keep an outcome for the item's next test report (plugin.pytest_runtest_makereport)."""
    node.stash.setdefault(HANDED, []).append(outcome)


def junit_properties(result: AuditResult) -> list[tuple[str, str]]:
    """The key numbers for JUnit XML; a number that could not be measured is empty."""
    m = result.gate

    def text(value: object) -> str:
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


def _progress(config: pytest.Config):  # type: ignore[no-untyped-def]
    """Progress lines on the terminal, outside pytest's output capture."""
    from .runtime import ProgressPrinter

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.option.verbose < 0 or is_xdist_worker(config):
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
