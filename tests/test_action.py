"""The composite GitHub Action (action.yml at the repository's root): a valid file, and
its shell steps run here as a runner runs them, with the variables a runner sets
(GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, RUNNER_TEMP...). The steps that `use` other actions
(setup-python, cache, upload-artifact) are GitHub's own and are not run here."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def test_the_action_is_a_valid_composite_action():
    assert ACTION["runs"]["using"] == "composite"
    assert ACTION["name"] and ACTION["description"]
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), name
        assert spec.get("required") or "default" in spec, name
    steps = ACTION["runs"]["steps"]
    ids = {step["id"] for step in steps if "id" in step}
    for name, spec in ACTION["outputs"].items():
        (expression,) = EXPRESSION.findall(spec["value"])
        step, output = re.fullmatch(r"steps\.(\w+)\.outputs\.([\w-]+)", expression).groups()
        assert step in ids and spec.get("description"), name
    for step in steps:
        assert "name" in step
        if "uses" in step:  # pinned to a major version
            assert re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"]), step["uses"]
        else:
            assert step["shell"] == "bash" and step["run"].strip(), step["name"]
        for expression in EXPRESSION.findall(yaml.safe_dump(step)):
            for name in re.findall(r"inputs(?:\.([\w-]+)|\['([\w-]+)'\])", expression):
                assert (name[0] or name[1]) in ACTION["inputs"], expression


def _value(expression: str, context: dict) -> str:
    """An expression of the forms the action's run steps use."""
    if expression == "always()":
        return "true"
    if m := re.fullmatch(r"(\w+(?:\.[\w-]+|\['[\w-]+'\])+)(?: == '([^']*)')?", expression):
        path = re.findall(r"[\w-]+", m.group(1).replace("'", ""))
        value = context
        for key in path:
            value = value.get(key, "") if isinstance(value, dict) else ""
        return str(m.group(2) == value).lower() if m.group(2) is not None else str(value)
    raise AssertionError(f"an expression this test does not know: {expression}")


def run_action(inputs: dict[str, str], workdir: Path, runner: Path) -> tuple[dict, list[int], str]:
    """Run the action's shell steps in order, as a runner would: (the gate step's
    outputs, every run step's exit status, the job summary written)."""
    given = {k: v.get("default", "") for k, v in ACTION["inputs"].items()} | inputs
    context = {"inputs": given, "steps": {}, "runner": {"temp": str(runner), "os": "Linux"}}
    context["github"] = {"action_path": str(ROOT)}
    summary = runner / "step-summary.md"
    statuses = []
    for step in ACTION["runs"]["steps"]:
        if "if" in step and _value(step["if"], context) != "true":
            continue
        if "uses" in step:
            continue  # GitHub's own actions
        output = runner / f"output-{len(statuses)}"
        output.write_text("")
        env = {k: EXPRESSION.sub(lambda m: _value(m.group(1), context), str(v))
               for k, v in step.get("env", {}).items()}  # fmt: skip
        env |= {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
        env |= {"RUNNER_TEMP": str(runner), "GITHUB_ACTIONS": "true", "CI": "true"}
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=workdir,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        statuses.append(done.returncode)
        lines = [line.split("=", 1) for line in output.read_text().splitlines() if "=" in line]
        if "id" in step:
            context["steps"][step["id"]] = {"outputs": dict(lines)}
    gate = context["steps"]["gate"]["outputs"]
    return gate, statuses, summary.read_text() if summary.exists() else ""


@pytest.mark.parametrize("kind", ["leaky", "clean"])
def test_the_action_gates_and_sets_its_outputs(kind, leaky_release, clean_release, tmp_path):
    release = {"leaky": leaky_release, "clean": clean_release}[kind]
    inputs = {
        "generated": str(release / "generated"),
        "used": str(release / "real" / "used"),
        "not-used": str(release / "real" / "not_used"),
        "features": "pixels",
        "install": "false",  # installed already; the install step needs the network
        "report": "out/audit.html",
    }
    (tmp_path / "runner").mkdir()
    gate, statuses, summary = run_action(inputs, tmp_path, tmp_path / "runner")
    expected = {"leaky": ("FAIL", 1), "clean": ("PASS", 0)}[kind]
    assert gate["verdict"] == expected[0] and gate["exit-code"] == str(expected[1])
    assert statuses == [0, expected[1]]  # the audit step, then the gate's
    assert 0 <= float(gate["f1"]) <= 1 and 0 <= float(gate["auc"]) <= 1
    assert gate["report"] == "out/audit.html"
    for name in ("audit.html", "audit.json", "audit.md"):
        assert (tmp_path / "out" / name).is_file(), name
    assert f"GAN privacy audit: {expected[0]}" in summary
    assert (tmp_path / "runner" / "gan-privacy-cache").is_dir()  # the cache kept between runs


def test_bad_input_fails_the_gate_with_status_2_and_no_verdict(tmp_path):
    inputs = {"generated": "nowhere", "used": "nowhere", "not-used": "nowhere", "install": "false"}
    (tmp_path / "runner").mkdir()
    gate, statuses, summary = run_action(inputs, tmp_path, tmp_path / "runner")
    assert gate["exit-code"] == "2" and gate["verdict"] == "" and statuses == [0, 2]
    assert summary == ""
