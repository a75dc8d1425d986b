"""Render the report of a brainmri64 scenario and look at it in headless Chromium.

    python benchmarks/report_screenshot.py [--scenario vae-100] [--out /tmp/gan-report]

Writes report.html and report.json, screenshots at desktop and phone width
(desktop.png, phone.png) and a printed copy (print.pdf) into --out. Chromium comes
from Debian's packages; it is installed with apt-get when missing (as root).
Chromium runs with a fresh profile and no network services, so the screenshot shows
what the file alone contains.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.report import write_outputs
from pytest_gan_privacy.results import summary_line
from pytest_gan_privacy.settings import AuditSettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary, installed from Debian's packages if missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("chromium is missing: install it (Debian: apt-get install -y chromium)")
    print("installing chromium with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("chromium") or sys.exit("chromium did not install")


def browse(html: Path, *args: str) -> None:
    """Run headless Chromium on the file with a fresh, throw-away profile."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args, html.as_uri()]
        subprocess.run(command, capture_output=True, timeout=120, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--scenario", default="vae-100")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gan-report")
    parser.add_argument("--real-thumbnails", action="store_true")
    args = parser.parse_args()
    root = args.data / args.scenario
    settings = AuditSettings(
        generated=root / "generated",
        used=root / "real" / "used",
        not_used=root / "real" / "not_used",
        report_real_thumbnails=args.real_thumbnails,
    )
    result = run_audit(settings)
    html, data = args.out / "report.html", args.out / "report.json"
    started = time.perf_counter()
    write_outputs(result, html, data)
    print(summary_line(result))
    print(
        f"report {html} ({html.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - started:.2f} s)"
    )
    for name, size in (("desktop", "1200,4400"), ("phone", "390,6400")):
        browse(html, f"--screenshot={args.out / f'{name}.png'}", f"--window-size={size}")
    browse(html, f"--print-to-pdf={args.out / 'print.pdf'}", "--no-pdf-header-footer")
    print(f"screenshots and print: {args.out}/desktop.png, phone.png, print.pdf")


if __name__ == "__main__":
    main()
