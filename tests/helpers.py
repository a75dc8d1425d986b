"""Helpers the test modules share (imported as `helpers`; fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.uid import JPEG2000Lossless, RLELossless

from pytest_gan_privacy import mae
from pytest_gan_privacy.settings import AuditSettings
from pytest_gan_privacy.synthetic import phantom, write_dicom, write_nifti

ROLES = ("generated", "real/used", "real/not_used")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brainmri64"

# An MAE that trains in a fraction of a second: what the audits in the tests use.
TINY_MAE = mae.MAEConfig(
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=1,
    num_heads=2,
    decoder_dim=32,
    decoder_depth=1,
    decoder_heads=2,
    epochs=3,
    batch_size=64,
    warmup_epochs=1,
)


def audit_args(release: Path) -> list[str]:
    """Command-line paths of a release in the audit's layout."""
    return [
        "--generated",
        str(release / "generated"),
        "--used",
        str(release / "real" / "used"),
        "--not-used",
        str(release / "real" / "not_used"),
    ]


def settings_for(release: Path, **kwargs) -> AuditSettings:
    return AuditSettings(
        generated=release / "generated",
        used=release / "real" / "used",
        not_used=release / "real" / "not_used",
        workers=0,
        **kwargs,
    )


def without_clock(data: dict, *also: str) -> dict:
    """An audit's JSON without what changes from run to run: dates, seconds, settings."""
    for volatile in ("created", "seconds", "timings", "settings", "cache", *also):
        data.pop(volatile)
    for attack in data["attacks"].values():
        attack.pop("seconds")
    return data


def requires_shared_data(scenario: str) -> Path:
    path = SHARED_DATA / scenario
    if not path.is_dir():
        pytest.skip(f"{path} is not here (the shared benchmark data)")
    return path


def write_big_png(path: Path, width: int, height: int, row: bytes | None = None) -> Path:
    """A valid grey PNG of any size without holding its pixels: every row the same
    (`row`, default black), compressed as a stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    line = b"\0" + (row if row is not None else bytes(width))
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(line) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def phantoms(n: int, seed: int) -> torch.Tensor:
    """n synthetic brain-slice phantoms as (n, 1, 64, 64) pixels in [0, 1]."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([phantom(rng) for _ in range(n)]) / 255.0).float()[:, None]


def break_release(case: str, release: Path) -> str:
    """Damage a copy of a release as `case` says; returns text the message must name."""

    generated, used, not_used = (
        release / "generated",
        release / "real/used",
        release / "real/not_used",
    )
    if case == "empty folder":
        shutil.rmtree(used)
        used.mkdir()
        return f"used folder {used} has no files"
    if case == "only non-image files":
        shutil.rmtree(used)
        used.mkdir()
        (used / "labels.csv").write_text("id,label\n")
        return "has only 1 non-image files"
    if case == "zero-byte file":
        (generated / "zero.png").write_bytes(b"")
        return "zero.png: not an image"
    if case == "truncated png":
        data = next(used.iterdir()).read_bytes()
        (used / "cut.png").write_bytes(data[: len(data) * 2 // 3])
        return "cut.png: corrupt or truncated image"
    if case == "text named .png":
        (not_used / "readme.png").write_text("hello")
        return "readme.png: not an image"
    if case == "1x1 image":
        Image.new("L", (1, 1)).save(generated / "dot.png")
        return "dot.png: cannot be decoded (1x1 pixels is too small"
    if case == "huge image":
        write_big_png(generated / "huge.png", 20_000, 20_000)
        return "huge.png: too large"
    if case == "broken link":
        (generated / "gone.png").symlink_to(release / "nowhere.png")
        return "gone.png: cannot read it (a broken link"
    if case == "link loop":
        os.symlink("loop.png", generated / "loop.png")
        return "loop.png: cannot read it"
    if case == "same image in used and not_used":
        shutil.copy(next(used.iterdir()), not_used / "twin.png")
        return "twin.png"
    if case == "fewer candidates than folds":
        for extra in sorted(not_used.iterdir())[4:]:
            extra.unlink()
        return "not_used folder has 4 image(s)"
    raise ValueError(case)


BAD_INPUTS = [
    "empty folder",
    "only non-image files",
    "zero-byte file",
    "truncated png",
    "text named .png",
    "1x1 image",
    "huge image",
    "broken link",
    "link loop",
    "same image in used and not_used",
    "fewer candidates than folds",
]


def predict_release(folder: Path, leaky: bool, seed: int = 0, n: int = 40) -> dict[str, int]:
    """A release in the predict layout: `n` members and `n` non-members, half of each
    (by name: names are random) moved from real/used and real/not_used into
    candidates/, unlabelled. Returns the candidates' hidden labels, name -> 1 (used)."""
    from pytest_gan_privacy.synthetic import make_release

    make_release(folder, leaky, n_members=n, n_non_members=n, n_generated=150, seed=seed)
    candidates = folder / "candidates"
    candidates.mkdir()
    hidden = {}
    for role, label in (("used", 1), ("not_used", 0)):
        for path in sorted((folder / "real" / role).iterdir())[: n // 2]:
            path.rename(candidates / path.name)
            hidden[path.name] = label
    return hidden


def predict_args(release: Path, out: Path) -> list[str]:
    """Command-line arguments of `gan-privacy predict` for a predict_release."""
    return [
        "predict",
        *audit_args(release),
        "--candidates",
        str(release / "candidates"),
        "--out",
        str(out),
    ]


# --- a release in every input format -----------------------------------------------

SLICES = 3  # images per file in the formats that hold several
# how every PatientID starts: a distinctive string that no output may show
PATIENT = "QQSECRET-PID-"
# 8-bit values v -> v / 255, as a PNG is read
WINDOW = {"WindowCenter": 127.5, "WindowWidth": 256}


def _slices(files: list[Path]) -> list[list[np.ndarray]]:
    """The folder's images, SLICES to a file (the last file takes the rest)."""
    images = [np.asarray(Image.open(f).convert("L")) for f in files]
    groups = [images[i : i + SLICES] for i in range(0, len(images), SLICES)]
    if len(groups) > 1 and len(groups[-1]) < SLICES:
        groups[-2] += groups.pop()
    return groups


def _volume(stack: list[np.ndarray]) -> np.ndarray:
    """Slices stacked as an axial volume that the radiological view shows as they were."""
    return np.stack([img[::-1, ::-1].T for img in stack], axis=2).astype(np.int16)


def release_as(fmt: str, source: Path, target: Path, **header) -> Path:
    """A PNG release `source` written in `fmt` under `target`, every role alike; files
    of several images (multi-frame DICOM, NIfTI volumes) hold a patient's slices.
    `header`: more DICOM attributes for every file."""
    for role in ROLES:
        (target / role).mkdir(parents=True)
        _role_as(fmt, source / role, target / role, header)
    return target


def _role_as(fmt: str, source: Path, target: Path, more: dict) -> None:
    files = sorted(source.glob("*.png"))
    if fmt == "jpeg":
        for f in files:
            Image.open(f).save(target / f"{f.stem}.jpg", quality=95)
    elif fmt == "tiff-16":
        for f in files:
            pixels = np.asarray(Image.open(f).convert("L")).astype(np.uint16) * 257
            Image.fromarray(pixels).save(target / f"{f.stem}.tif")
    elif fmt in ("dicom", "dicom-rle"):  # one file per patient and image
        for f in files:
            pixels = np.asarray(Image.open(f).convert("L"))
            header = {**WINDOW, "PatientID": f"{PATIENT}{target.name}-{f.stem}", **more}
            if fmt == "dicom":
                write_dicom(target / f.stem, pixels, **header)
            else:
                write_dicom(target / f"{f.stem}.dcm", pixels, syntax=RLELossless, **header)
    for n, stack in enumerate(_slices(files)):
        patient = {"PatientID": f"{PATIENT}{target.name}-{n}", **more}
        if fmt == "dicom-multiframe":
            write_dicom(target / f"p{n}.dcm", np.stack(stack), **WINDOW, **patient)
        elif fmt == "dicom-jpeg2000":
            pixels = np.stack(stack)
            write_dicom(target / f"p{n}.dcm", pixels, syntax=JPEG2000Lossless, **patient)
        elif fmt == "dicom-jpeg":
            write_dicom(target / f"p{n}", np.stack(stack), syntax="jpeg-baseline", **patient)
        elif fmt == "nifti":
            write_nifti(target / f"p{n}.nii.gz", _volume(stack))
        elif fmt == "nifti-4d":  # the chosen volume, and another behind it
            volume = _volume(stack)
            write_nifti(target / f"p{n}.nii", np.stack([255 - volume, volume], axis=3))


# --- hostile files -------------------------------------------------------------------


def raw(path: Path, **attributes: str) -> Path:
    """Set attributes of a DICOM file to any text of up to 16 characters, as a broken
    exporter writes them: each is written as a placeholder of its VR, whose bytes are
    then replaced (pydicom itself refuses to write such values)."""
    ds = pydicom.dcmread(path)
    swaps = []
    for n, (keyword, text) in enumerate(attributes.items(), start=1):
        vr = pydicom.datadict.dictionary_VR(tag_for_keyword(keyword))
        placeholder = f"-{n}{n * 7:06d}.{n * 13:07d}" if vr == "DS" else chr(64 + n) * 16
        setattr(ds, keyword, placeholder)
        swaps.append((placeholder.encode(), text.ljust(16).encode()))
    ds.save_as(path)
    data = path.read_bytes()
    for placeholder, text in swaps:
        assert data.count(placeholder) == 1
        data = data.replace(placeholder, text)
    path.write_bytes(data)
    return path


def ramp() -> np.ndarray:
    r, c = np.mgrid[:32, :32]
    return ((r * 131 + c * 17) % 4000).astype(np.uint16)


def rle_bomb(path: Path) -> Path:
    """A small RLE DICOM whose header says 60,000 x 60,000 pixels (3.6 billion)."""
    write_dicom(path, np.zeros((8, 8), np.uint16), syntax=RLELossless, PatientID="X")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60_000
    ds.save_as(path)
    return path


def nifti_bomb(path: Path) -> Path:
    """A .nii.gz whose header says 1000 x 1000 x 1000 voxels, a few bytes of them given."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4), header)
    nib.save(image, path)  # written as 2 x 2 x 2, then the header claims the rest
    data = bytearray(nib.openers.Opener(path).read())
    data[40:56] = np.array([3, 1000, 1000, 1000, 1, 1, 1, 1], "<i2").tobytes()
    with nib.openers.Opener(path, "wb") as f:
        f.write(bytes(data))
    return path


def garbage_after_marker(path: Path) -> Path:
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(2000))
    return path
