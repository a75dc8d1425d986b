"""What the report may say about a patient: an opaque label, never a header value.

A patient's group is a DICOM PatientID (or study / series UID), a NIfTI file or a line
of a groups file: any of these may be a medical record number. The report and the JSON
name a patient "patient N" instead, numbered in the content order of the patients'
images (the smallest SHA-256 of each patient's images first). The number is no function
of the ID, so it cannot be recomputed from one, with or without a secret; it depends
only on pixels the auditor holds, and the same data get the same labels on every run.
"""

from __future__ import annotations

from collections.abc import Sequence


def patient_labels(groups: Sequence[str], hashes: Sequence[str]) -> dict[str, str]:
    """group -> "patient N" (N from 1), in the order of each group's smallest hash."""
    first: dict[str, str] = {}
    for group, digest in zip(groups, hashes, strict=True):
        if group not in first or digest < first[group]:
            first[group] = digest
    ordered = sorted(first, key=lambda g: (first[g], g))
    return {group: f"patient {n}" for n, group in enumerate(ordered, start=1)}
