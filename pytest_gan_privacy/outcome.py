"""What an audit run under pytest hands over to be shown and written: one typed object.

Under pytest-xdist the audits run on the workers, which write no files; each outcome
rides on its test's report (xdist sends a report's JSON-able attributes to the
controller) and the controller writes each report once and shows the summary. Without
xdist the one process plays both parts, through the same object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_ATTRIBUTE = "gan_audit"  # the test report attribute that carries the outcomes


@dataclass
class AuditOutcome:
    """An audit's outcome as the controller needs it: its summary, JUnit properties
    and rendered files, or the error that stopped it."""

    key: str  # the audit (its settings), so that each is shown once
    error: str | None = None  # bad input or settings: nothing else is set
    passed: bool = False
    lines: list[str] = field(default_factory=list)  # the summary (results.summary_lines)
    warnings: list[str] = field(default_factory=list)
    report: str = ""
    json: str = ""
    properties: list[tuple[str, str]] = field(default_factory=list)  # JUnit, name -> value
    # (path, text, whether the user named that path): written by the controller
    files: list[tuple[str, str, bool]] = field(default_factory=list)
    job_summary: str = ""  # Markdown for the CI job's summary page ($GITHUB_STEP_SUMMARY)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditOutcome:
        """From `to_json`'s dict, as it crossed processes (tuples come back as lists)."""
        return cls(
            **{
                **data,
                "properties": [tuple(p) for p in data.get("properties", ())],
                "files": [tuple(f) for f in data.get("files", ())],
            }
        )
