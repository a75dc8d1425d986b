"""The wheel: built from this checkout, installed away from it, and used from there."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import audit_args

ROOT = Path(__file__).resolve().parents[1]

RUN_FROM_INSTALL = """
import sys
import pytest_gan_privacy, pytest_gan_privacy.report as report
from pytest_gan_privacy.cli import main
print("package", pytest_gan_privacy.__file__)
print("templates", report.templates_dir())
sys.exit(main(sys.argv[1:]))
"""


def test_installed_wheel_ships_templates_and_renders_a_report(clean_release, tmp_path: Path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # without build isolation when hatchling is here: no download needed
    isolation = ["--no-isolation"] if importlib.util.find_spec("hatchling") else []
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", dist, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("pytest_gan_privacy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pytest_gan_privacy/templates/report.html.j2" in names
    assert "pytest_gan_privacy/py.typed" in names  # PEP 561: the package's types are used
    assert not any(n.startswith(("tests/", "templates/")) for n in names)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    (entry_points,) = site.glob("pytest_gan_privacy-*.dist-info/entry_points.txt")
    assert "gan_privacy = pytest_gan_privacy.plugin" in entry_points.read_text()
    assert "gan-privacy = pytest_gan_privacy.cli:main" in entry_points.read_text()

    args = [*audit_args(clean_release), "--report", "out/report.html", "--workers", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", RUN_FROM_INSTALL, "audit", *args, "--quiet"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()[:2])
    assert Path(lines["package"]).is_relative_to(site)
    assert Path(lines["templates"]) == site / "pytest_gan_privacy" / "templates"
    html = (elsewhere / "out" / "report.html").read_text()
    assert "PASS" in html and 'id="riskiest"' in html and "<svg" in html


def _package_imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports: at the top, inside functions and under
    TYPE_CHECKING alike (a cycle through type hints is still a knot a reader must untie)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "pytest_gan_privacy"
    modules = {path.stem for path in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = (imported & modules) - {"__init__", path.stem}
    return graph


def test_the_package_imports_form_no_cycle():
    graph = _package_imports()
    done, path = set(), []

    def visit(module: str) -> None:
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "report" not in graph["cache"] and "nearcopies" not in graph["encoders"]


# the modules a user imports from: the Python API, its types, the fixtures
PUBLIC_SURFACE = (
    "__init__",
    "api",
    "result",
    "results",
    "settings",
    "errors",
    "fixtures",
    "outcome",
)


def test_the_public_surface_is_typed(tmp_path):
    """mypy --strict on the modules users import from (py.typed promises their types)."""
    mypy = pytest.importorskip("mypy.api")
    package = Path(__file__).resolve().parents[1] / "pytest_gan_privacy"
    args = ["--strict", "--follow-imports=silent", "--ignore-missing-imports"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    out, err, status = mypy.run([*args, *(str(package / f"{m}.py") for m in PUBLIC_SURFACE)])
    assert status == 0, out + err
