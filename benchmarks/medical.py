"""Medical formats and patients on converted brainmri64 scenarios.

    python benchmarks/medical.py [--features pixels] [--scenarios vae-100 ...] [--rules]

Each scenario's images (used, not_used and generated alike) are grouped into patients:
in content-hash order, consecutive images form patients of 4 to 8 slices (sizes drawn
from a seeded generator). They are then written three ways:

- PNG: the original folders, audited as they are (per image), and with a --groups CSV
  (per patient);
- DICOM: one folder per patient, one MR file per slice (8-bit MONOCHROME2, Window
  Center/Width 128/256, which maps a value v to v / 255 exactly, as a PNG is read), the
  PatientID and PatientName set to distinctive strings;
- NIfTI: one volume per patient, the slices stacked along the axial axis (identity affine,
  stored so that the radiological view shows each slice as the PNG does), read with the
  default percentile window.

Every audit runs with the defaults except `--features`, cache on (in a folder of the
run's own), twice: cold, then warm from the cache with the same numbers. It prints one
row: verdict, image-level F1 [95 % CI] and AUC, patient-level F1 [CI] and AUC, seconds
cold and warm. At the end it
checks that no PatientID or PatientName reached a JSON or report. With --rules it also
prints the gate's patient-level AUC and F1 for each way of combining a patient's image
scores (patients.PATIENT_SCORE_RULES), recomputed from the DICOM audits' image scores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from pytest_gan_privacy.results import result_json
from pytest_gan_privacy.runtime import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads: steady on a shared CPU (runtime.py)
import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from pytest_gan_privacy.gate import best_per_fold
from pytest_gan_privacy.patients import PATIENT_SCORE_RULES
from pytest_gan_privacy.pipeline import run_audit
from pytest_gan_privacy.report import write_outputs
from pytest_gan_privacy.settings import AuditSettings
from pytest_gan_privacy.synthetic import write_dicom, write_nifti

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainmri64"
SCENARIOS = ("vae-100", "dcgan-100", "disjoint", "copies")
ROLES = {"generated": "generated", "used": "real/used", "not_used": "real/not_used"}
SIZES = (4, 8)  # slices per patient, inclusive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def patients_of(folder: Path, seed: int) -> list[list[Path]]:
    """The folder's PNGs in content-hash order, cut into patients of 4 to 8 slices."""
    files = sorted(folder.glob("*.png"), key=sha256)
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(files):
        n = int(rng.integers(SIZES[0], SIZES[1] + 1))
        out.append(files[i : i + n])
        i += n
    if len(out) > 1 and len(out[-1]) < SIZES[0]:  # a short tail joins the last patient
        tail = out.pop()
        out[-1] += tail
    return out


def patient_id(role: str, n: int) -> str:
    return f"ZZPID-{role}-{n:04d}-SECRET"


def convert(scenario: Path, out: Path, seed: int = 13) -> dict[str, Path]:
    """The scenario as PNG + groups CSV, DICOM series and NIfTI volumes, under `out`."""
    roots = {"png": scenario, "dicom": out / "dicom", "nifti": out / "nifti"}
    for folder in (roots["dicom"], roots["nifti"]):
        if folder.exists():
            shutil.rmtree(folder)
    groups_csv = out / "groups.csv"
    rows = []
    for k, (role, sub) in enumerate(ROLES.items()):
        for n, files in enumerate(patients_of(scenario / sub, seed + k)):
            pid = patient_id(role, n)
            series = generate_uid()
            stack = [np.asarray(Image.open(f).convert("L")) for f in files]
            for s, (f, pixels) in enumerate(zip(files, stack, strict=True)):
                write_dicom(
                    roots["dicom"] / sub / f"p{n:04d}" / f"{s:03d}",
                    pixels.astype(np.uint8),
                    modality="MR",
                    PatientID=pid,
                    PatientName=f"DOE^{pid}",
                    AccessionNumber="QQACC" + hashlib.sha256(pid.encode()).hexdigest()[:8],
                    SeriesInstanceUID=series,
                    InstanceNumber=s,
                    WindowCenter=128,  # LINEAR: v -> v / 255 exactly
                    WindowWidth=256,
                )
                if role != "generated":
                    rows.append((str(f), f"{role}-{n}"))
            # plane[x, y] = img[H-1-y, W-1-x]: medical.py shows plane[::-1, ::-1].T
            volume = np.stack([img[::-1, ::-1].T for img in stack], axis=2).astype(np.int16)
            write_nifti(roots["nifti"] / sub / f"p{n:04d}.nii.gz", volume)
    with groups_csv.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return {**roots, "groups": groups_csv}


def settings(root: Path, features: str, **kwargs) -> AuditSettings:
    return AuditSettings(
        generated=root / "generated",
        used=root / "real" / "used",
        not_used=root / "real" / "not_used",
        features=features,
        **kwargs,
    )


def ci(m) -> str:
    return "no CI" if m.f1_ci is None else f"[{m.f1_ci[0]:.3f}, {m.f1_ci[1]:.3f}]"


def row(name: str, form: str, result, seconds: float, warm: float) -> str:
    img = result.image_gate
    if result.patient_level is None:
        patient = "- | -"
    else:
        p = result.patient_level
        patient = (
            f"{p.gate.f1:.3f} {ci(p.gate)} ({p.patients.n_used}+{p.patients.n_not_used}) "
            f"| {p.gate.auc:.3f}"
        )
    turned = "" if not result.orientation or not result.orientation.turned else " (turned)"
    return (
        f"| `{name}` | {form} | {result.verdict}{turned} | {img.f1:.3f} {ci(img)} | "
        f"{img.auc:.3f} | {patient} | {seconds:.0f} | {warm:.0f} |"
    )


def rule_rows(name: str, result) -> list[str]:
    """The gate's patient-level numbers for each way to combine a patient's scores."""
    p = result.patient_level.patients
    columns = np.column_stack(
        [a.scores.scores for n, a in result.attacks.items() if n != result.gating_attack]
    )
    s = result.settings
    out = []
    for rule in PATIENT_SCORE_RULES:
        gate = best_per_fold(
            p.combine(columns, rule), p.membership, s.threshold_policy, s.folds, s.seed, s.bootstrap
        )
        out.append(f"| `{name}` | {rule} | {gate.auc:.3f} | {gate.f1:.3f} {ci(gate)} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="mae")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--rules", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="keep the converted data here")
    args = parser.parse_args()
    table = [
        "| scenario | format | verdict | image F1 [95% CI] | image AUC | "
        "patient F1 [95% CI] (patients used+not) | patient AUC | cold s | warm s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rules = [
        "| scenario | patient score | patient AUC | patient F1 [95% CI] |",
        "|---|---|---|---|",
    ]
    leaks = []
    with tempfile.TemporaryDirectory() as tmp:
        # the default path, cache on: a cache of this run's own, so the first audit of
        # each form is cold and the second warm
        os.environ["GAN_PRIVACY_CACHE_DIR"] = str(Path(tmp) / "cache")
        base = args.out or Path(tmp)
        for name in args.scenarios:
            work = base / name
            roots = convert(DATA / name, work)
            runs = [
                ("PNG", settings(roots["png"], args.features)),
                ("PNG + --groups", settings(roots["png"], args.features, groups=roots["groups"])),
                ("DICOM", settings(roots["dicom"], args.features)),
                ("NIfTI", settings(roots["nifti"], args.features)),
            ]
            for form, s in runs:
                started = time.perf_counter()
                result = run_audit(s)
                seconds = time.perf_counter() - started
                again = run_audit(s)  # warm: from the cache, the same numbers
                warm = time.perf_counter() - started - seconds
                assert result_json(again)["attacks"] == result_json(result)["attacks"], form
                table.append(row(name, form, result, seconds, warm))
                print(table[-1], flush=True)
                if form in ("DICOM", "NIfTI"):
                    stem = work / f"out-{form}"
                    write_outputs(result, stem.with_suffix(".html"), stem.with_suffix(".json"))
                    text = (
                        stem.with_suffix(".html").read_text()
                        + stem.with_suffix(".json").read_text()
                    )
                    leaks += [f"{name} {form}" for w in ("ZZPID", "DOE^", "QQACC") if w in text]
                if args.rules and form == "DICOM":
                    rules += rule_rows(name, result)
    print("\n".join(table))
    if args.rules:
        print("\n".join(rules))
    print("header values in the outputs:", leaks or "none")


if __name__ == "__main__":
    main()
