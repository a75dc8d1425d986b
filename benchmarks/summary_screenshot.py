"""The Markdown summary as a reviewer sees it on a CI job's page: two releases of a model
audited against the same candidates, the second with the first as its baseline, the
summary rendered in headless Chromium.

    python benchmarks/summary_screenshot.py [--out /tmp/gan-summary] [--features pixels]

Release 1 is ../shared/data/brainmri64/disjoint (a generator that never saw a
candidate); release 2 is the same with 10 members memorised (benchmarks/builders.py
few-copies, k = 10): the same candidates, so the baseline compares. Writes
baseline.json, summary.md, summary.html (GitHub's look, roughly: Python-Markdown with
tables) and summary.png into --out. Needs `pip install markdown` and Chromium
(report_screenshot.py installs it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import builders
from report_screenshot import DATA, browse

STYLE = """
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 860px; margin: 24px auto; padding: 0 16px; }
h2 { border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; font-size: 1.5em; }
table { border-collapse: collapse; margin: 12px 0; }
td, th { border: 1px solid #d1d9e0; padding: 6px 13px; }
tr:nth-child(2n) { background: #f6f8fa; }
code { background: #eff1f3; padding: .2em .4em; border-radius: 6px; font-size: 85%; }
"""
# GitHub renders these shortcodes as emoji; Python-Markdown leaves them as text
SHORTCODES = {":x:": "\u274c", ":white_check_mark:": "\u2705", ":warning:": "\u26a0\ufe0f"}


def audit(release: Path, out: Path, *more: str) -> int:
    """The command line on a release, run in `out` (relative output paths land there)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest_gan_privacy.cli", "audit", "--quiet"]
    command += ["--generated", str(release / "generated"), "--used", str(release / "real/used")]
    command += ["--not-used", str(release / "real/not_used"), *more]
    return subprocess.run(command, cwd=out).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gan-summary")
    parser.add_argument("--features", default=None, help="default: the tool's (mae)")
    args = parser.parse_args()
    import markdown

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    features = ["--features", args.features] if args.features else []
    first = DATA / "disjoint"
    second = builders.few_copies(first, out / "release-2", k=10)
    audit(first, out / "r1", "--report", str(out / "r1.html"),
          "--json", str(out / "baseline.json"), *features)  # fmt: skip
    job = out / "job-summary.md"  # what $GITHUB_STEP_SUMMARY collects
    job.write_text("")
    os.environ["GITHUB_STEP_SUMMARY"] = str(job)
    status = audit(second, out / "r2", "--report", "release-2/gan-audit-report.html",
                   "--summary-md", str(out / "summary.md"),
                   "--baseline", str(out / "baseline.json"), *features)  # fmt: skip
    text = job.read_text()
    for code, emoji in SHORTCODES.items():
        text = text.replace(code, emoji)
    body = markdown.markdown(text, extensions=["tables"])
    page = out / "summary.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{STYLE}</style>{body}")
    browse(page, f"--screenshot={out / 'summary.png'}", "--window-size=900,1100")
    print(f"release 2 exit {status}; summary: {out / 'summary.md'}; picture: {out / 'summary.png'}")


if __name__ == "__main__":
    main()
