"""Fixtures for teams that write their own audit tests (several models in one suite):
the settings of a test (ini file, command line, then its `gan_audit` marker), the
generated images, the candidates and the audit's result. Each skips the test unless
pytest runs with --gan-audit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from .errors import AuditInputError
from .item import RESULT, run_cached_audit
from .session import make_settings, session_state, with_outputs
from .settings import MARKER_KEYS, OPTIONS, AuditSettings

if TYPE_CHECKING:
    from .images import ImageSet
    from .result import AuditResult, Candidates

NAMED = pytest.StashKey[list[Path]]()  # on a test item: its output paths the user named


def _fail(exc: AuditInputError) -> NoReturn:
    """Fail the test with the message alone: raised from None, so pytest does not show
    it twice ("During handling of the above exception...")."""
    raise pytest.fail.Exception(str(exc), pytrace=False) from None


@pytest.fixture
def gan_audit_settings(request: pytest.FixtureRequest) -> AuditSettings:
    """The audit settings for this test: ini file, command line, then the test's
    `gan_audit` marker. Skips the test unless pytest runs with --gan-audit."""
    state = session_state(request.config)
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
        settings = make_settings(state, overrides)
    except AuditInputError as exc:
        _fail(exc)
    settings, named = with_outputs(state, settings, overrides, request.node.name)
    request.node.stash[NAMED] = named
    return settings


@pytest.fixture
def gan_generated_samples(gan_audit_settings: AuditSettings) -> ImageSet:
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
def gan_candidates(gan_audit_settings: AuditSettings) -> Candidates:
    """The real candidates: members (used) and non-members (not_used), with labels."""
    from .loading import load_candidates

    try:
        return load_candidates(gan_audit_settings)
    except AuditInputError as exc:
        _fail(exc)


@pytest.fixture
def gan_audit_result(
    request: pytest.FixtureRequest, gan_audit_settings: AuditSettings
) -> AuditResult:
    """The AuditResult for this test's settings (run once per session per settings).

    `result.passed`, `result.verdict`, `result.f1`, `result.gate` (all metrics);
    `pytest_gan_privacy.result_json(result)` is its JSON.
    """
    named = request.node.stash.get(NAMED, [])
    try:
        result = run_cached_audit(request.node, gan_audit_settings, named)
    except AuditInputError as exc:
        _fail(exc)
    request.node.stash[RESULT] = result
    return result
