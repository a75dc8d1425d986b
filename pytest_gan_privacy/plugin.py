"""The pytest plugin: `pytest --gan-audit`. Its hooks; the rest lives beside it:
session.py (configuration and state), item.py (the audit test), fixtures.py,
reporting.py (files, terminal summary, JUnit, pytest-html), outcome.py (what crosses
from xdist workers to the controller).

Loaded by pytest on every run, so this module imports nothing heavy: torch, timm
and scikit-learn are imported only when an audit runs. Without `--gan-audit` the
plugin adds options, a marker and fixtures that skip, and does nothing else.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from . import fixtures
from .item import AUDIT_ITEM_NAME, HANDED, GanAuditItem, GanAuditWarning  # noqa: F401 - public
from .outcome import REPORT_ATTRIBUTE
from .reporting import HtmlExtras, ReportWriter
from .session import check_rootdir, is_xdist_worker, session_state, start_session
from .settings import MARKER_KEYS, OPTIONS, REQUIRED, default_of


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
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """With --gan-audit, torch's threads wait passively (runtime.py: shared CPUs); set
    before the conftest files are imported, since one of them may import torch."""
    if getattr(early_config.known_args_namespace, "gan_audit", False):
        from .runtime import prefer_passive_waiting

        prefer_passive_waiting()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gan_audit(**settings): per-test audit settings for the gan_audit_* fixtures "
        f"(keys: {', '.join(MARKER_KEYS)})",
    )
    config.pluginmanager.register(fixtures, "gan-audit-fixtures")
    if not is_xdist_worker(config):
        check_rootdir(config)
    state = start_session(config)
    if state.enabled and config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(HtmlExtras(), "gan-audit-html-extras")
    if state.enabled and not is_xdist_worker(config):
        config.pluginmanager.register(ReportWriter(config), "gan-audit-report-writer")


def pytest_report_header(config: pytest.Config) -> str | None:
    state = session_state(config)
    if not state.enabled:
        return None
    b = state.base
    paths = ", ".join(f"{k}={b[k]}" for k in REQUIRED if k in b)
    return (
        f"gan-audit: max F1 {b.get('max_f1', default_of('max_f1'))}, features "
        f"{b.get('features', default_of('features'))}, {paths or 'paths from gan_audit markers'}"
    )


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, which then applies to it
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """With --gan-audit, the configured audit is a test of its own. It is left out only
    when the configuration lacks a folder and tests of the suite's own ask for audits
    (their markers give the folders); otherwise it runs, and fails if a folder is
    missing: a misconfigured gate turns red, never green."""
    state = session_state(config)
    if not state.enabled:
        return
    complete = all(k in state.base for k in REQUIRED)
    own_audits = any("gan_audit_settings" in getattr(i, "fixturenames", ()) for i in items)
    if complete or not own_audits:
        items.append(
            GanAuditItem.from_parent(session, name=AUDIT_ITEM_NAME, nodeid=AUDIT_ITEM_NAME)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Attach the outcomes of audits run in this test phase to its report."""
    outcome = yield
    handed = item.stash.get(HANDED, None)
    if handed:
        setattr(outcome.get_result(), REPORT_ATTRIBUTE, [o.to_json() for o in handed])
        handed.clear()
