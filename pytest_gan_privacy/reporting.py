"""Where reports are written and audits shown (the controller under pytest-xdist, else
the one process): each audit's files written once, its summary in the terminal, its
numbers as JUnit suite properties, and with pytest-html a link to its report."""

from __future__ import annotations

import html
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .errors import AuditInputError
from .item import AUDIT_ITEM_NAME, RESULT
from .outcome import REPORT_ATTRIBUTE, AuditOutcome


@dataclass
class Shown:
    """An audit as the terminal summary shows it."""

    outcome: AuditOutcome
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (report, JSON) written
    problems: list[str] = field(default_factory=list)


class ReportWriter:
    """Writes the audits' reports, each path once, and shows the audits in the
    terminal summary: registered only where reports are written (not on xdist workers)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.shown: dict[str, Shown] = {}  # audit -> what the summary shows
        self.written: set[str] = set()  # paths written
        self.no_audit: str | None = None  # why the run failed though no audit failed

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, None]:
        """Fail closed: with --gan-audit, a run in which no audit ran (every audit test
        deselected or skipped, a marker test that never asked for the result) fails."""
        outcome = yield
        if outcome.excinfo is not None or self.config.option.collectonly or self.shown:
            return
        self.no_audit = (
            "--gan-audit was given but no audit ran, so nothing was checked: run the "
            f"{AUDIT_ITEM_NAME} test (is it deselected by -k or -m?), or a test that uses "
            "the gan_audit_result fixture"
        )
        session.testsfailed += 1

    @pytest.hookimpl(tryfirst=True)  # before the terminal and JUnit see the report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for data in getattr(report, REPORT_ATTRIBUTE, ()):
            outcome = AuditOutcome.from_json(data)
            if outcome.key not in self.shown and outcome.job_summary:  # once an audit
                from .summary import append_to_job_summary

                append_to_job_summary(outcome.job_summary)
            shown = self.shown.setdefault(outcome.key, Shown(outcome))
            files = [f for f in outcome.files if f[0] not in self.written]
            if not files:
                continue
            try:
                from .report import write_files

                write_files(files)
            except (AuditInputError, OSError) as exc:  # the test fails: a report was lost
                report.outcome = "failed"
                report.longrepr = f"the audit's report was not written: {exc}"
                shown.problems.append(str(report.longrepr))
                continue
            self.written.update(path for path, *_ in files)
            shown.outputs.append((outcome.report, outcome.json))
            self._record(outcome.properties)

    def _record(self, properties: Iterable[tuple[str, str]]) -> None:
        """An audit's numbers as suite-level JUnit properties, valid under every
        junit_family (test-level <properties> are not valid in xunit2): pytest's JUnit
        writer is a plugin with `add_global_property`, what record_testsuite_property
        calls."""
        for plugin in self.config.pluginmanager.get_plugins():
            if callable(getattr(plugin, "add_global_property", None)):
                for name, value in properties:
                    plugin.add_global_property(name, value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.collectonly:
            terminalreporter.section("GAN privacy audit")
            terminalreporter.write_line(
                "--collect-only: no audit ran, so nothing was checked", yellow=True
            )
            return
        if not self.shown and self.no_audit is None:
            return
        terminalreporter.section("GAN privacy audit")
        if self.no_audit is not None:
            terminalreporter.write_line(f"ERROR: {self.no_audit}", red=True)
        for shown in self.shown.values():
            _summary(terminalreporter, shown)


def _summary(terminal: Any, shown: Shown) -> None:
    outcome = shown.outcome
    if outcome.error is not None:
        terminal.write_line(f"ERROR: {outcome.error}", red=True)
        return
    colour = {"green": True} if outcome.passed else {"red": True}
    summary, *details = outcome.lines
    terminal.write_line(summary, bold=True, **colour)
    for line in details:
        terminal.write_line(line)
    for warning in outcome.warnings:
        terminal.write_line(f"  warning: {warning}", yellow=True)
    for report, json_path in shown.outputs:
        terminal.write_line(f"  report: {report}  json: {json_path}")
    for problem in shown.problems:
        terminal.write_line(f"  ERROR: {problem}", red=True)


class HtmlExtras:
    """With pytest-html: the verdict and a link to the audit's report as extras of
    each test that recorded an audit. Registered only when pytest-html is loaded."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        result = item.stash.get(RESULT, None)
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
