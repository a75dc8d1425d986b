"""Audit synthetic medical images for leaks of their training data.

This module stays import-light: pytest imports the plugin on every run, so torch,
timm and scikit-learn are imported only when an audit actually runs.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-gan-privacy")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
