"""Shared test data: small synthetic releases made on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

# pytester's in-process runs drop the modules first imported inside them, and torch,
# numpy and friends cannot be imported twice in one process: import them all first.
import timm  # noqa: F401

import pytest_gan_privacy.audit  # noqa: F401
from pytest_gan_privacy import mae
from pytest_gan_privacy.synthetic import make_release

pytest_plugins = ["pytester"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brainmri64"

# An MAE that trains in a fraction of a second: what the audits in the tests use.
TINY_MAE = mae.MAEConfig(
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=1,
    num_heads=2,
    decoder_dim=32,
    decoder_depth=1,
    decoder_heads=2,
    epochs=3,
    batch_size=64,
    warmup_epochs=1,
)
REAL_MAE_PRESETS = dict(mae.PRESETS)


@pytest.fixture(scope="session")
def leaky_release(tmp_path_factory) -> Path:
    """A release whose generator memorised its 30 members."""
    return make_release(
        tmp_path_factory.mktemp("leaky"),
        leaky=True,
        n_members=30,
        n_non_members=30,
        n_generated=150,
        seed=1,
    )


@pytest.fixture(scope="session")
def clean_release(tmp_path_factory) -> Path:
    """A release whose generator never saw any candidate."""
    return make_release(
        tmp_path_factory.mktemp("clean"),
        leaky=False,
        n_members=30,
        n_non_members=30,
        n_generated=150,
        seed=2,
    )


def audit_args(release: Path) -> list[str]:
    """Command-line paths of a release in the audit's layout."""
    return [
        "--generated",
        str(release / "generated"),
        "--used",
        str(release / "real" / "used"),
        "--not-used",
        str(release / "real" / "not_used"),
    ]


def requires_shared_data(scenario: str) -> Path:
    path = SHARED_DATA / scenario
    if not path.is_dir():
        pytest.skip(f"{path} is not here (the shared benchmark data)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _tiny_mae():
    """Audits in the tests train a tiny MAE (the presets' numbers are measured by
    benchmarks/mae.py, and test_scenarios.py runs the real ones)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mae, "PRESETS", {name: TINY_MAE for name in REAL_MAE_PRESETS})
        yield


@pytest.fixture(autouse=True, scope="session")
def _private_cache_folder(tmp_path_factory):
    """Tests share one feature cache of their own, never the user's."""
    folder = tmp_path_factory.mktemp("feature-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAN_PRIVACY_CACHE_DIR", str(folder))
        yield folder
