"""Shared test data: small synthetic releases made on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_gan_privacy.runtime import prefer_passive_waiting

# torch's threads wait passively (they would spin on the shared 2 cores of CI): set
# before timm imports torch below
prefer_passive_waiting()

# pytester's in-process runs drop the modules first imported inside them, and torch,
# numpy and friends cannot be imported twice in one process: import them all first.
import timm  # noqa: F401
from helpers import TINY_MAE

import pytest_gan_privacy.pipeline  # noqa: F401
from pytest_gan_privacy import mae
from pytest_gan_privacy.synthetic import make_release

pytest_plugins = ["pytester"]


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


@pytest.fixture(autouse=True, scope="session")
def _tiny_mae():
    """Audits in the tests train a tiny MAE, test_scenarios.py's too (the presets'
    numbers are measured by benchmarks/mae.py)."""
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


@pytest.fixture(autouse=True, scope="session")
def no_report_in_the_working_directory():
    """A test that forgets --report writes the default report where pytest runs (one was
    committed that way): every test writes under its tmp_path."""
    from pytest_gan_privacy.settings import DEFAULT_REPORT

    stray = Path.cwd() / DEFAULT_REPORT
    existed = stray.exists()
    yield
    assert existed or not stray.exists(), f"a test wrote {stray}: give it --report under tmp_path"
