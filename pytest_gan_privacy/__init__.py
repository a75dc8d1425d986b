"""Audit synthetic medical images for leaks of their training data.

    from pytest_gan_privacy import audit
    result = audit("release/generated", "data/train", "data/holdout", report="audit.html")
    print(result.verdict, result.f1)

The package stays import-light: pytest imports the plugin on every run, so the public
names below load on first use (PEP 562), and torch, timm and scikit-learn are imported
only when an audit actually runs.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("pytest-gan-privacy")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_PUBLIC = {
    "audit": "api",
    "predict": "api",
    "result_json": "results",
    "AuditSettings": "settings",
    "AuditResult": "result",
    "Prediction": "prediction",
    "AuditInputError": "errors",
}
__all__ = [
    "AuditInputError",
    "AuditResult",
    "AuditSettings",
    "Prediction",
    "__version__",
    "audit",
    "predict",
    "result_json",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them
    from .api import audit, predict
    from .errors import AuditInputError
    from .prediction import Prediction
    from .result import AuditResult
    from .results import result_json
    from .settings import AuditSettings


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
