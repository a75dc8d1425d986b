"""The Markdown summary: the verdict where reviewers look, a CI job's summary page.

Drawn from the JSON result (results.result_json), like the report. It holds the
verdict, why it fails, the key numbers with their interval and chance level, the
baseline's changes and where the report is: no pixel, no image name, no patient.
`--summary-md PATH` writes it; it is also appended to `$GITHUB_STEP_SUMMARY` when that
variable is set (GitHub Actions shows that file on the job's summary page; GitLab and
others show Markdown reports the same way).
"""

from __future__ import annotations

import os
from typing import Any

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"  # the file GitHub Actions shows on the job's page
ICONS = {"PASS": ":white_check_mark:", "FAIL": ":x:", "PASS (inconclusive)": ":warning:"}


def summary_markdown(data: dict[str, Any], report: str | None = None) -> str:
    """The summary of one audit, from its JSON result."""
    verdict = data["verdict"]
    lines = [f"## {ICONS[verdict]} GAN privacy audit: {verdict}", ""]
    if data["failures"]:
        lines += ["**Fails because**", ""]
        lines += [f"- {why}" for why in data["failures"]]
        lines.append("")
    lines += ["| measure | this release |", "|---|---|", *_rows(data), ""]
    lines += _baseline(data.get("baseline"))
    if data["warnings"]:
        lines += [f"<details><summary>{len(data['warnings'])} warning(s)</summary>", ""]
        lines += [f"- {w}" for w in data["warnings"]]
        lines += ["", "</details>", ""]
    if report:
        lines += [f"Report: `{report}` (HTML, with its JSON beside it)", ""]
    return "\n".join(lines)


def _rows(data: dict[str, Any]) -> list[str]:
    unit = "per patient" if data["membership_unit"] == "patient" else "per image"
    ci = data["f1_ci"]
    interval = "no interval (bootstrap off)" if ci is None else f"95% CI {ci[0]:.3f}-{ci[1]:.3f}"
    rows = [
        f"| Leakage F1 ({unit}) | **{data['f1']:.3f}** ({interval}; a labels-blind guess "
        f"gets {data['chance_f1']:.3f}) vs limit {data['max_f1']:.3f} |",
        f"| AUC | {_number(data['auc'])} |",
        f"| TPR at 1% FPR | {_number(data['tpr_at_1pct_fpr'])} |",
    ]
    e = data.get("exposure")
    if e:
        rows.append(
            f"| Members exposed at {e['fpr']:.1%} FPR | {e['members_exposed']} of "
            f"{e['n_members']} (chance: {e['expected_by_chance']:.1f}; p = {e['p_value']:.2g}) |"
        )
    nc = data.get("near_copies")
    if nc:
        rows.append(
            f"| Near-copies | {nc['count']} ({nc['members_copied']} member(s), "
            f"{nc['non_members_copied']} non-member(s) copied) |"
        )
    pc = data.get("power_check")
    if pc:
        found = "conclusive" if pc["conclusive"] else "**inconclusive**"
        rows.append(
            f"| Power check | {pc['found']} of {pc['planted']} planted copies found ({found}) |"
        )
    rows.append(
        f"| Audited | {data['n_used']} used, {data['n_not_used']} not_used, "
        f"{data['n_generated']} generated |"
    )
    return rows


def _baseline(b: dict[str, Any] | None) -> list[str]:
    if b is None:
        return []
    title = f"**Since the baseline** (`{b['path']}`, {b['verdict']}, {b['created']})"
    if not b["comparable"]:
        return [title, "", f"Not compared: {b['not_compared_because']}", ""]
    lines = [title, "", "| | before | now | change |", "|---|---|---|---|"]
    for c in b["changes"].values():
        digits = 0 if c["count"] else 3
        cells = [_number(c["before"], digits), _number(c["after"], digits)]
        cells.append(_number(c["change"], digits, "+"))
        lines.append(f"| {c['label']} | {' | '.join(cells)} |")
    return [*lines, ""]


def _number(value: float | None, digits: int = 3, sign: str = "") -> str:
    return "n/a" if value is None else f"{value:{sign}.{digits}f}"


def append_to_job_summary(text: str) -> None:
    """Append a summary to the CI job's summary page ($GITHUB_STEP_SUMMARY), when set."""
    step = os.environ.get(STEP_SUMMARY)
    if step:
        with open(step, "a", encoding="utf-8") as f:
            f.write(text + "\n")
