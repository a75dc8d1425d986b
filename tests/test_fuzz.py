"""A fuzz pass over the DICOM and NIfTI readers: valid files, mutated (bytes flipped,
inserted, cut; header fields that decide sizes and values set to anything), must each
give images or a bad-file error naming the file, with bounded memory: never a crash.

Hypothesis drives the readers directly, many examples; a seeded batch of the same
mutations goes through `gan-privacy audit` with the defaults, where every file must end
audited or named among the images left out."""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import shutil
import struct
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pydicom
from helpers import audit_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import RLELossless

from pytest_gan_privacy.cli import main
from pytest_gan_privacy.errors import MissingDecoderError, UnreadableImage
from pytest_gan_privacy.medical import DICOM, NIFTI, DecodeOptions, read_image, read_medical_file
from pytest_gan_privacy.synthetic import make_release, write_dicom, write_nifti

# DICOM attributes whose values decide sizes and pixel values: (group, element, VR)
DICOM_FIELDS = [
    (0x0028, 0x0002, "US"),  # Samples per Pixel
    (0x0028, 0x0008, "IS"),  # Number of Frames
    (0x0028, 0x0010, "US"),  # Rows
    (0x0028, 0x0011, "US"),  # Columns
    (0x0028, 0x0100, "US"),  # Bits Allocated
    (0x0028, 0x0101, "US"),  # Bits Stored
    (0x0028, 0x0103, "US"),  # Pixel Representation
    (0x0028, 0x1050, "DS"),  # Window Center
    (0x0028, 0x1051, "DS"),  # Window Width
    (0x0028, 0x1052, "DS"),  # Rescale Intercept
    (0x0028, 0x1053, "DS"),  # Rescale Slope
]
# NIfTI-1 header fields: (offset, struct format)
NIFTI_FIELDS = [(40 + 2 * i, "<h") for i in range(8)]  # dim[0..7]
NIFTI_FIELDS += [(70, "<h"), (72, "<h"), (108, "<f"), (112, "<f"), (116, "<f")]  # type, bitpix,
NIFTI_FIELDS += [(76 + 4 * i, "<f") for i in range(8)]  # vox_offset, scl_slope/inter; pixdim
NIFTI_FIELDS += [(252, "<h"), (254, "<h")] + [(280 + 4 * i, "<f") for i in range(12)]  # sform
TEXT_VALUES = [b"", b"NaN", b"Inf", b"-Inf", b"1e308", b"-0", b"abc", b"0", b"65536", b"\xff\xfe"]


def _ramp(rows=32, cols=32) -> np.ndarray:
    r, c = np.mgrid[:rows, :cols]
    return ((r * 131 + c * 17) % 4000).astype(np.uint16)


@functools.cache
def seed_files() -> dict[str, bytes]:
    """Valid files to mutate, by name (the name says the format)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))
    frames = np.stack([_ramp() + i for i in range(3)])
    files = [
        write_dicom(folder / "ct.dcm", _ramp(), WindowCenter=40, WindowWidth=400,
                    RescaleSlope=1, RescaleIntercept=-1024),
        write_dicom(folder / "frames.dcm", frames, syntax=RLELossless),
        write_dicom(folder / "jpeg.dcm", (_ramp() % 256).astype(np.uint8), syntax="jpeg-baseline"),
        write_nifti(folder / "volume.nii", (_ramp(16, 16)[:, :, None] + np.arange(4)).astype("i2")),
        write_nifti(folder / "volume.nii.gz", np.stack([_ramp(16, 12)] * 3, axis=2).astype("f4")),
    ]  # fmt: skip
    seeds = {path.name: path.read_bytes() for path in files}
    shutil.rmtree(folder)
    return seeds


def _dicom_offsets(data: bytes) -> dict[tuple[int, int], tuple[int, int]]:
    """Where each field's value lies in an explicit-VR little-endian file: tag -> (start,
    length)."""
    out = {}
    for group, element, _ in DICOM_FIELDS:
        at = data.find(struct.pack("<HH", group, element))
        if 0 <= at and at + 8 <= len(data):
            length = struct.unpack("<H", data[at + 6 : at + 8])[0]
            out[(group, element)] = (at + 8, length)
    return out


def mutate(name: str, data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutations: ("flip", position, byte), ("cut", position), ("insert", position,
    bytes), ("field", index, value: an int, a float or bytes)."""
    out = bytearray(data)
    for op in ops:
        kind, *args = op
        if not out:
            break
        if kind == "flip":
            out[args[0] % len(out)] = args[1]
        elif kind == "cut":
            del out[args[0] % len(out) :]
        elif kind == "insert":
            at = args[0] % len(out)
            out[at:at] = args[1]
        elif kind == "field" and name.endswith(".dcm"):
            group, element, vr = DICOM_FIELDS[args[0] % len(DICOM_FIELDS)]
            where = _dicom_offsets(bytes(out)).get((group, element))
            if where is not None:
                start, length = where
                value = args[1]
                if vr == "US" and not isinstance(value, bytes):
                    whole = int(value) if np.isfinite(value) else 65535
                    raw = struct.pack("<H", whole % 65536)
                else:
                    raw = value if isinstance(value, bytes) else repr(value).encode()
                out[start : start + length] = raw[:length].ljust(length, b" ")
        elif kind == "field" and name.endswith(".nii"):  # the .gz's header is compressed
            offset, fmt = NIFTI_FIELDS[args[0] % len(NIFTI_FIELDS)]
            value = args[1]
            if isinstance(value, bytes):
                value = len(value)
            try:
                packed = struct.pack(fmt, int(value) if fmt == "<h" else float(value))
            except (struct.error, OverflowError, ValueError):
                packed = b"\xff" * struct.calcsize(fmt)
            out[offset : offset + len(packed)] = packed
    return bytes(out)


positions = st.integers(0, 2**20)
values = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([0, 1, -1, 3, 60000, 65535, 2**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TEXT_VALUES),
)
operations = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(0, 255)),
    st.tuples(st.just("cut"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("field"), st.integers(0, 40), values),
    st.tuples(st.just("field"), st.integers(0, 40), values),  # twice as likely
)


def read_every_image(path: Path) -> int:
    """The images of one file, each decoded as the audit decodes it: their count, or a
    bad-file error."""
    fmt = NIFTI if ".nii" in path.name else DICOM
    medical = read_medical_file(path, fmt, DecodeOptions())
    for ref, _ in medical.images:
        pixels = read_image(ref)
        assert pixels.dtype == np.float32 and pixels.ndim == 2
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    return len(medical.images)


# the number of mutated files the readers are fuzzed with (more for a long pass:
# GAN_PRIVACY_FUZZ_EXAMPLES=30000 python -m pytest tests/test_fuzz.py)
READER_EXAMPLES = int(os.environ.get("GAN_PRIVACY_FUZZ_EXAMPLES", "3000"))


@settings(
    max_examples=READER_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(seed=st.sampled_from(["ct.dcm", "frames.dcm", "jpeg.dcm", "volume.nii", "volume.nii.gz"]),
       ops=st.lists(operations, min_size=1, max_size=4))  # fmt: skip
def test_mutated_files_give_images_or_a_bad_file_error(tmp_path, seed, ops):
    path = tmp_path / seed
    path.write_bytes(mutate(seed, seed_files()[seed], ops))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_every_image(path)
    except (UnreadableImage, MissingDecoderError):
        pass
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 1_000_000, f"the peak grew by {grown_kib / 2**20:.2f} GiB"


CLI_FILES = 300  # mutated files in the release audited end to end


def seeded_ops(rng: np.random.Generator) -> list[tuple]:
    """Mutations as the strategy above draws them, from a seeded generator."""
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        kind = ["flip", "cut", "insert", "field", "field"][int(rng.integers(5))]
        position = int(rng.integers(0, 2**20))
        if kind == "flip":
            ops.append((kind, position, int(rng.integers(256))))
        elif kind == "cut":
            ops.append((kind, position))
        elif kind == "insert":
            ops.append((kind, position, rng.bytes(int(rng.integers(1, 64)))))
        else:
            choices = [int(rng.integers(-(2**31), 2**31)), 60000, 0, float("nan"), 1e308]
            value = [*choices, TEXT_VALUES[int(rng.integers(len(TEXT_VALUES)))]]
            ops.append((kind, int(rng.integers(41)), value[int(rng.integers(len(value)))]))
    return ops


def test_a_release_full_of_mutated_files_is_audited_or_each_file_named(tmp_path):
    seeds = seed_files()
    release = make_release(
        tmp_path / "release", leaky=False, n_members=20, n_non_members=20, n_generated=40, seed=3
    )
    used = release / "real" / "used"
    rng = np.random.default_rng(0)
    names = sorted(seeds)
    written = []
    for i in range(CLI_FILES):
        seed = names[i % len(names)]
        name = f"m{i:03d}-{seed}"
        (used / name).write_bytes(mutate(seed, seeds[seed], seeded_ops(rng)))
        written.append(name)
    outcomes = {}
    for run, more in (("stop", []), ("skip", ["--skip-bad-images"])):
        out = tmp_path / run
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            status = main(
                ["audit", *audit_args(release), *more, "--quiet"]
                + ["--report", str(out / "r.html"), "--json", str(out / "r.json")]
            )
        assert status in (0, 1, 2) and "Traceback" not in stderr.getvalue(), stderr.getvalue()
        outcomes[run] = (status, stderr.getvalue(), out / "r.json")
    status, err, _ = outcomes["stop"]
    assert status == 2 and "could not be read" in err  # some mutations break a file
    status, err, json_path = outcomes["skip"]
    assert status in (0, 1), err
    data = json.loads(json_path.read_text())
    audited = {row["id"].split("/", 1)[1].split("#")[0] for row in data["candidates"]}
    left_out = {item["image"].split("#")[0] for item in data["left_out"] if item["role"] == "used"}
    for name in written:  # nothing lost without a word
        assert name in audited or name in left_out, name


def test_the_mutations_reach_the_fields_they_aim_at():
    seeds = seed_files()
    """The targeted mutations find their fields (else the fuzz would only flip bytes)."""
    assert len(_dicom_offsets(seeds["ct.dcm"])) >= 9
    changed = mutate("ct.dcm", seeds["ct.dcm"], [("field", 2, 60000)])  # Rows
    assert pydicom.dcmread(io.BytesIO(changed)).Rows == 60000
    nifti = mutate("volume.nii", seeds["volume.nii"], [("field", 1, 999)])  # dim[1]
    assert struct.unpack("<h", nifti[42:44])[0] == 999
