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
