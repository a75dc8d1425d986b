"""Synthetic brain-slice phantoms and releases made from them, for the demo and tests.

No real patient data and no downloads: every image is drawn from a seeded random
generator. A "leaky" release is what a generator that memorised its training set
produces (jittered, re-exposed, blended copies of the members); a "clean" release
is fresh phantoms from the same population, which never saw any candidate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Low-frequency texture: coarse noise up-sampled with bilinear interpolation."""
    coarse = rng.standard_normal((scale, scale)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def phantom(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One grey brain-slice-like image (uint8, size x size): skull, brain, ventricles,
    sometimes a lesion, and an individual texture."""
    yy, xx = np.mgrid[-1 : 1 : complex(size), -1 : 1 : complex(size)].astype(np.float32)
    cx, cy = rng.uniform(-0.08, 0.08, 2)
    rx, ry = rng.uniform(0.62, 0.8), rng.uniform(0.72, 0.9)
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    img = np.zeros((size, size), np.float32)
    img[r < 1.0] = 0.85  # skull
    brain = r < 0.9
    img[brain] = 0.45 + 0.15 * _smooth_noise(rng, size, 6)[brain]
    for side in (-1, 1):  # ventricles
        vx = cx + side * rng.uniform(0.08, 0.16)
        vr = np.sqrt(
            ((xx - vx) / rng.uniform(0.05, 0.1)) ** 2 + ((yy - cy) / rng.uniform(0.15, 0.28)) ** 2
        )
        img[vr < 1] = 0.12
    if rng.random() < 0.7:  # lesion
        lx, ly = rng.uniform(-0.45, 0.45, 2)
        lr = np.sqrt((xx - cx - lx) ** 2 + (yy - cy - ly) ** 2) / rng.uniform(0.06, 0.2)
        img += 0.35 * np.exp(-(lr**2)) * brain
    img += 0.08 * _smooth_noise(rng, size, 16) * brain  # fine, individual detail
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def memorised_copy(rng: np.random.Generator, source: np.ndarray, other: np.ndarray) -> np.ndarray:
    """What an over-fitted generator emits: a training image, shifted by a pixel or
    two, re-exposed, blended a little with another, with noise."""
    dy, dx = rng.integers(-1, 2, 2)
    img = np.roll(source.astype(np.float32), (dy, dx), axis=(0, 1))
    img = 0.9 * img + 0.1 * other.astype(np.float32)
    img = img * rng.uniform(0.92, 1.08) + rng.uniform(-8, 8)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(images: list[np.ndarray], folder: Path, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # random numeric names: nothing about membership may be read from a name
    names = rng.choice(10**6, size=len(images), replace=False)
    for name, img in zip(names, images, strict=True):
        Image.fromarray(img, mode="L").save(folder / f"{name:06d}.png")


def make_release(
    folder: Path,
    leaky: bool,
    n_members: int = 40,
    n_non_members: int = 40,
    n_generated: int = 400,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a release in the audit's layout (generated/, real/used/, real/not_used/).

    leaky: generated images are memorised copies of the members; otherwise they are
    new phantoms from the same population. Returns `folder`.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    members = [phantom(rng, size) for _ in range(n_members)]
    non_members = [phantom(rng, size) for _ in range(n_non_members)]
    if leaky:
        picks = rng.integers(0, n_members, size=(n_generated, 2))
        generated = [memorised_copy(rng, members[a], members[b]) for a, b in picks]
    else:
        generated = [phantom(rng, size) for _ in range(n_generated)]
    _save(generated, folder / "generated", rng)
    _save(members, folder / "real" / "used", rng)
    _save(non_members, folder / "real" / "not_used", rng)
    return folder


# --- medical files, for the tests and benchmarks that feed the audit DICOM and NIfTI ----


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    bits: int | None = None,
    syntax: str | None = None,
    preamble: bool = True,
    **header,
) -> Path:
    """A CT or MR image file (one frame, or a frame per plane of a 3-D array) written
    with pydicom: `bits` stored (8 for uint8 pixels, else 12, by default), compressed
    with the transfer `syntax` when given (a UID pydicom can compress with, or
    "jpeg-baseline" for uint8 pixels), without the preamble and file meta (a bare
    data set) when `preamble` is false; other attributes by keyword (`PatientID="P7"`,
    `WindowCenter=40`). The PatientID is "P1" unless given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "P1"
    if bits is None:
        bits = 8 if pixels.dtype == np.uint8 else 12
    ds.set_pixel_data(pixels, photometric, bits)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    if syntax == "jpeg-baseline":  # 8-bit lossy JPEG, one encoded by Pillow per frame
        _encapsulate_jpeg(ds, pixels)
    elif syntax is not None:
        ds.compress(syntax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare data set: no preamble, no "DICM", no file meta
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def _encapsulate_jpeg(ds, pixels: np.ndarray) -> None:
    """Pixel data as JPEG Baseline (Process 1): what pydicom cannot encode itself."""
    import io

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    frames = pixels[None] if pixels.ndim == 2 else pixels
    encoded = []
    for frame in frames:
        out = io.BytesIO()
        Image.fromarray(frame.astype(np.uint8), mode="L").save(out, "JPEG", quality=90)
        encoded.append(out.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """A NIfTI volume (a `.nii` or `.nii.gz` file), with the identity affine by default."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine), path)
    return path
