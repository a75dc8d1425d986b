"""Demo: audit two synthetic releases with `pytest --gan-audit`; one passes, one fails.

Makes its own brain-slice phantoms (no downloads, no patient data) in examples/out/:

- clean/: a generator that never saw the candidate images -> PASS
- leaky/: a generator that memorised its training images  -> FAIL

Each release gets a pytest.ini naming its three folders, so `pytest --gan-audit` needs
no test code; each audit writes an HTML report and a JSON result next to its data. The demo exits 0
when both verdicts come out as expected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_gan_privacy.synthetic import make_release

OUT = Path(__file__).resolve().parent / "out"
EXPECTED = {"clean": 0, "leaky": 1}  # pytest's exit status: 0 passed, 1 a test failed


PYTEST_INI = """\
[pytest]
# the audit's settings; paths are relative to this file
gan_audit_generated = generated
gan_audit_used = real/used
gan_audit_not_used = real/not_used
gan_audit_report = gan-audit-report.html
"""


def audit(release: Path) -> int:
    """Configure the audit with ini keys and run `pytest --gan-audit` in the release."""
    (release / "pytest.ini").write_text(PYTEST_INI)
    print(f"\n$ cd {release} && pytest --gan-audit", flush=True)
    command = [sys.executable, "-m", "pytest", "--gan-audit", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=release).returncode


def main() -> int:
    outcomes = {}
    for seed, (name, leaky) in enumerate([("clean", False), ("leaky", True)]):
        release = make_release(
            OUT / name, leaky=leaky, n_members=50, n_non_members=50, n_generated=500, seed=seed
        )
        outcomes[name] = audit(release)
    print("\nDemo summary")
    for name, code in outcomes.items():
        verdict = {0: "PASS", 1: "FAIL"}.get(code, f"error (exit {code})")
        print(f"  {name:5s} release: {verdict:5s} report: {OUT / name / 'gan-audit-report.html'}")
    as_expected = outcomes == EXPECTED
    print(
        "  as expected: the clean release passes, the leaky one fails"
        if as_expected
        else "  UNEXPECTED verdicts: see the output above"
    )
    return 0 if as_expected else 1


if __name__ == "__main__":
    sys.exit(main())
