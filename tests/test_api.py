"""The Python API: the README's notebook example as a user runs it, the options by their
Python names, files written only when asked, and an import that stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from helpers import predict_release

import pytest_gan_privacy
from pytest_gan_privacy import AuditInputError, AuditResult, audit, predict, result_json

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- notebook example: run by tests/test_api.py -->"


def readme_example() -> str:
    text = README.read_text()
    block = text.split(MARKER, 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_the_readme_notebook_example_runs_as_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(readme_example(), "README.md", "exec"), {})  # noqa: S102 - our own text
    first, *reasons = out.getvalue().splitlines()
    assert re.fullmatch(r"FAIL F1 \d\.\d{3} AUC \d\.\d{3}", first), first
    assert reasons and all(r.startswith("fails because ") for r in reasons)
    assert (tmp_path / "demo-audit.html").is_file()  # asked for
    assert not (tmp_path / "demo-audit.json").exists()  # not asked for


def test_options_are_the_command_lines_by_their_python_names(leaky_release, tmp_path):
    report = tmp_path / "out" / "r.html"
    result = audit(
        leaky_release / "generated",
        leaky_release / "real" / "used",
        leaky_release / "real" / "not_used",
        features="pixels",
        max_f1=0.99,
        json=report.with_suffix(".json"),
    )
    assert isinstance(result, AuditResult)
    assert result.settings.max_f1 == 0.99 and str(result.settings.features) == "pixels"
    assert result.f1 == result.gate.f1 and result.auc == result.gate.auc
    assert result.failures == [] or "F1" not in result.failures[0]
    data = json.loads(report.with_suffix(".json").read_text())
    assert data == json.loads(json.dumps(result_json(result), default=str))
    assert not report.exists()  # the report was not asked for
    assert repr(result).startswith(f"AuditResult(verdict={result.verdict!r}, f1=")


def test_an_unknown_or_malformed_option_is_an_input_error(clean_release):
    paths = [
        clean_release / "generated",
        clean_release / "real/used",
        clean_release / "real/not_used",
    ]
    with pytest.raises(AuditInputError, match="audit\\(\\) has no option 'max_f'"):
        audit(*paths, max_f=0.5)
    with pytest.raises(AuditInputError, match="the F1 limit must be between 0 and 1"):
        audit(*paths, max_f1=2)


def test_predict_returns_the_calls_and_writes_only_what_is_asked(tmp_path):
    release = tmp_path / "release"
    hidden = predict_release(release, leaky=True, n=24)
    prediction = predict(
        release / "generated",
        release / "real" / "used",
        release / "real" / "not_used",
        release / "candidates",
        features="pixels",
        scores=tmp_path / "scores.csv",
    )
    assert sorted(name for name, _, _ in prediction.rows()) == sorted(hidden)
    assert (tmp_path / "scores.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "scores.csv"]
    with pytest.raises(AuditInputError, match="predict\\(\\) has no option 'report'"):
        predict(
            *[release / p for p in ("generated", "real/used", "real/not_used")], "c", report="x"
        )


def test_the_public_names_load_on_first_use_and_the_import_stays_light():
    code = (
        "import sys, pytest_gan_privacy as p; light = 'torch' not in sys.modules; "
        "from pytest_gan_privacy import AuditSettings, AuditInputError; "
        "light = light and 'torch' not in sys.modules; "
        "from pytest_gan_privacy import audit; import pytest_gan_privacy.pipeline; "
        "from pytest_gan_privacy import audit as again; "
        "print(light, callable(audit) and again is audit)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "True"], done.stderr
    assert set(pytest_gan_privacy.__all__) == {*pytest_gan_privacy._PUBLIC, "__version__"}
    assert (Path(pytest_gan_privacy.__file__).parent / "py.typed").is_file()
