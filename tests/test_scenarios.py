"""The defaults on the shared benchmark scenarios (skipped where ../shared/data is absent):
a generator that never saw the candidates passes, one that copied them fails. (With the
tests' tiny MAE: benchmarks/mae.py measures the real presets on every scenario.)"""

import pytest
from helpers import requires_shared_data

from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.results import summary_line
from pytest_gan_privacy.settings import AuditSettings


@pytest.mark.parametrize("scenario, passes", [("disjoint", True), ("copies", False)])
def test_default_verdicts_on_brainmri64(scenario, passes):
    root = requires_shared_data(scenario)
    result = run_audit(
        AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
        )
    )
    assert result.passed is passes, summary_line(result)
    if passes:
        assert 0.4 < result.gate.auc < 0.6
        assert len(result.near_copies) == 0


def test_ddpm_replicas_are_named_on_brainmri64():
    """A diffusion model re-renders what it memorised: the near-copy listing names at
    least 90 % of the members in the scenario's memorised.txt (those with a replica closer
    than any non-member's best match, measured independently), and no non-member."""
    root = requires_shared_data("ddpm-100")
    result = run_audit(
        AuditSettings(
            generated=root / "generated",
            used=root / "real" / "used",
            not_used=root / "real" / "not_used",
        )
    )
    memorised = {line.split("\t")[0] for line in (root / "memorised.txt").read_text().splitlines()}
    copied = {result.candidates.ids[c] for c in result.near_copies.copied}
    assert len(memorised & copied) >= 0.9 * len(memorised), summary_line(result)
    assert all(c.startswith("used/") for c in copied)
