"""Medical formats: DICOM files and NIfTI volumes as 2-D grey images in [0, 1], and the
patient (group) of each image.

DICOM, as the standard reads it (PS3.3 C.11, PS3.4 N.2):

1. the modality LUT: Rescale Slope/Intercept (or a Modality LUT Sequence) give the
   modality's units, Hounsfield units for CT (pydicom's `apply_modality_lut`);
2. the VOI transform, the first that applies: the user's window (`--window`, in those
   units, for every input); the header's first Window Center/Width (per frame in an
   enhanced multi-frame file); the header's VOI LUT Sequence; else a robust window over
   the file's pixels, from the 0.5th to the 99.5th percentile. Which one was used is
   kept with each image (`Window.source`), for the report;
3. MONOCHROME1 inverted, so that high always means bright; colour (RGB, YBR, palette)
   reduced to grey with the ITU-R BT.601 weights that Pillow's "L" uses.

A multi-frame file gives one image per frame. Objects that are not images (DICOMDIR,
SR, RTSTRUCT, RTPLAN, SEG masks, waveforms) are left out and counted, not errors.

NIfTI: the volume is reoriented to the closest canonical (RAS+) orientation and sliced
along one axis (axial by default); each slice is shown as a radiologist would view it
(anterior or superior at the top, the patient's right on the left), which is how a DICOM
viewer shows the same acquisition. Intensity: the user's window, else the volume's
0.5-99.5 percentile window. A 4-D series needs one volume chosen (`--volume`).

Every image carries a group: the DICOM PatientID (else the study, the series, the
file), the NIfTI volume, or a line of a groups file (`read_groups_file`). Images whose
pixels are all equal after the pipeline (the empty slices at a volume's edges) are left
out and counted as blank: they hold nothing to compare, and identical blank slices of
two patients would look like one image in both `used` and `not_used`.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from .errors import AuditInputError

DICOM = "dicom"
NIFTI = "nifti"
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})  # .ima: Siemens' exports
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# axes of the canonical (RAS+) array: x runs to the patient's right, y to the front,
# z to the head
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
PERCENTILES = (0.5, 99.5)
# the percentiles come from at most this many voxels (an even stride through the
# volume): the same window, far faster than sorting a whole CT
PERCENTILE_SAMPLE = 4_000_000
# the package depends on these: a missing one is a broken installation
DECODERS_INSTALL = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# ITU-R BT.601 luma, the weights of Pillow's "L" conversion: a colour DICOM and the
# same picture as a PNG become the same grey
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class DecodeOptions:
    """How medical files become 2-D images: the settings `window`, `slice_axis`,
    `slice_range` and `volume`. The defaults read every file as the header says."""

    # (center, width) in the modality's units (HU for CT); overrides every header
    window: tuple[float, float] | None = None
    slice_axis: str = "axial"  # NIfTI: sagittal, coronal or axial slices
    # NIfTI: slices START <= i < STOP of the canonical volume (None: from the first / to
    # the last)
    slice_range: tuple[int | None, int | None] | None = None
    volume: int | None = None  # NIfTI: the volume of a 4-D series

    def __post_init__(self) -> None:
        if self.slice_axis not in SLICE_AXES:
            raise ValueError(f"unknown slice axis {self.slice_axis!r}")
        if self.window is not None and not self.window[1] > 0:
            raise ValueError(f"the window width must be greater than 0, got {self.window[1]}")

    @classmethod
    def from_settings(cls, settings: Any) -> DecodeOptions:
        """The options of an AuditSettings (already validated there)."""
        return cls(
            window=settings.window,
            slice_axis=settings.slice_axis,
            slice_range=settings.slice_range,
            volume=settings.volume,
        )


@dataclass(frozen=True)
class Window:
    """The VOI transform that mapped an image's values to [0, 1], and where it came
    from: "user" (--window), "header" (Window Center/Width), "voi_lut" (the header's
    VOI LUT Sequence), "percentile" (0.5-99.5 over the file or volume) or "colour"
    (a colour image, scaled by its bit depth: no window applies, not even --window)."""

    source: str
    center: float | None = None
    width: float | None = None
    # the header's VOI LUT Function; user and percentile windows are LINEAR_EXACT:
    # center - width/2 -> 0, center + width/2 -> 1
    function: str = "LINEAR_EXACT"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Values in the modality's units -> [0, 1] (PS3.3 C.11.2.1.2)."""
        center, width = float(self.center), float(self.width)  # type: ignore[arg-type]
        if self.function == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        if self.function == "LINEAR":  # the standard's offsets for integer-valued input
            center, width = center - 0.5, width - 1.0
        if width == 0:  # LINEAR with width 1: a threshold
            return (values > center).astype(np.float64)
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)

    def describe(self) -> str:
        """A short human description, e.g. "header 40/400" or "percentile 0.5-99.5"."""
        if self.center is None:
            return self.source
        lo, hi = PERCENTILES
        name = f"percentile {lo:g}-{hi:g}" if self.source == "percentile" else self.source
        return f"{name} {self.center:g}/{self.width:g}"


@dataclass(frozen=True)
class FrameRef:
    """One 2-D image inside a DICOM or NIfTI file: what a decoding worker needs to
    produce it again, exactly as it was hashed."""

    path: Path
    format: str  # DICOM or NIFTI
    index: int  # the frame (DICOM) or the canonical slice index (NIfTI)
    window: Window
    images_in_file: int  # frames, or slices along the axis (ids get "#index" when > 1)
    slice_axis: str | None = None  # NIfTI only
    volume: int | None = None  # NIfTI 4-D only


@dataclass
class MedicalFile:
    """The images of one medical file, with the content hash of each (in file order)."""

    images: list[tuple[FrameRef, str]]
    group: str
    blank: int = 0  # images left out because all their pixels are equal
    non_image: str | None = None  # the kind of a DICOM object that holds no image

    def left_out(self) -> dict[str, int]:
        """What this file adds to an ImageSet's `non_images` count, by kind."""
        counts = {"blank": self.blank} if self.blank else {}
        if self.non_image:
            counts[self.non_image] = 1
        return counts


class NotAnImage(Exception):
    """A DICOM object that holds no image to audit (DICOMDIR, SR, RTSTRUCT, SEG ...)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class UnreadableImage(ValueError):
    """A medical file that cannot give its images; the message says why and the fix."""


class MissingDecoderError(AuditInputError):
    """Compressed pixels whose decoder is not installed: an installation to fix, so it
    stops the audit even with --skip-bad-images."""


def medical_format(path: Path) -> str | None:
    """DICOM or NIFTI for a medical file, None for any other file. NIfTI and the DICOM
    suffixes are taken by name (a broken one is a bad file, reported); other files are
    DICOM when their content is (a PACS export often has no suffix at all)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return NIFTI
    if path.suffix.lower() in DICOM_SUFFIXES:
        return DICOM
    if not path.is_file():  # never open a pipe or a device to sniff it
        return None
    return DICOM if looks_like_dicom(path) else None


def looks_like_dicom(path: Path) -> bool:
    """The "DICM" marker at byte 128 (Part 10 files), or a bare data set without the
    preamble that pydicom parses into an object with a SOP class or a modality."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    # a bare data set starts with a tag of the meta (0002) or identifying (0008) group,
    # little or big endian: only those are worth a parse
    if head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    return _bare_dataset(path) is not None


def _bare_dataset(path: Path, pixels: bool = False) -> Dataset | None:
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)
    except Exception:  # noqa: BLE001 - anything that does not parse is not DICOM
        return None
    if not any(k in ds for k in ("SOPClassUID", "Modality", *PIXEL_KEYWORDS)):
        return None
    return ds


def read_medical_file(path: Path, fmt: str, options: DecodeOptions) -> MedicalFile:
    """Every image of a DICOM or NIfTI file, decoded once and hashed (the pixels are
    not kept). Raises NotAnImage, UnreadableImage or MissingDecoderError."""
    opened = _open(path, fmt, options.slice_axis, options.volume, options.slice_range)
    images: list[tuple[FrameRef, str]] = []
    blank = 0
    for index in opened.indices:
        window = opened.window(index, options.window)
        pixels = opened.image(index, window)
        if pixels.size and pixels.min() == pixels.max():
            blank += 1
            continue
        ref = FrameRef(
            path=path,
            format=fmt,
            index=index,
            window=window,
            images_in_file=opened.count,
            slice_axis=options.slice_axis if fmt == NIFTI else None,
            volume=options.volume if isinstance(opened, _NiftiImages) and opened.is_4d else None,
        )
        images.append((ref, pixel_hash(pixels)))
    return MedicalFile(images, opened.group, blank)


def read_image(ref: FrameRef) -> np.ndarray:
    """One image of a medical file as a 2-D float32 array in [0, 1], exactly as it was
    hashed. The file last opened by this process is kept open: the images of one
    file are neighbours in a set, so a volume is read once per pass and worker."""
    opened = _open_cached(ref.path, ref.format, ref.slice_axis, ref.volume, _stamp(ref.path))
    return opened.image(ref.index, ref.window)


def forget_open_files() -> None:
    """Drop the file that `read_image` keeps open (its memory), e.g. after a pass."""
    _open_cached.cache_clear()


def pixel_hash(pixels: np.ndarray) -> str:
    """The content hash of a decoded image: its shape and float32 values. The same
    slice stored with another transfer syntax hashes the same."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(f"{pixels.shape[0]}x{pixels.shape[1]}:".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=1)
def _open_cached(path, fmt, slice_axis, volume, stamp):  # noqa: ARG001 - stamp: the key
    return _open(path, fmt, slice_axis or "axial", volume, None)


def _open(path: Path, fmt: str, slice_axis: str, volume: int | None, slice_range):
    if fmt == DICOM:
        return _DicomImages(path)
    return _NiftiImages(path, slice_axis, volume, slice_range)


# --- DICOM -----------------------------------------------------------------------------


class _DicomImages:
    """A DICOM file's frames, decoded, with the header that maps them to grey."""

    def __init__(self, path: Path):
        self.path = path
        ds = self._read(path)
        self._check_is_image(ds)
        self._check_decoder(ds)
        try:
            frames = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - a decoder's or pydicom's complaint
            raise UnreadableImage(
                f"its pixel data cannot be decoded ({_first_line(exc)}); the file is "
                "corrupt or incomplete: export it again"
            ) from None
        self.ds = ds
        self.samples = int(ds.get("SamplesPerPixel", 1) or 1)
        self.photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        # one leading frame axis, also for a single frame
        single = frames.ndim == (3 if self.samples > 1 else 2)
        self.frames = frames[None] if single else frames
        self.count = self.frames.shape[0]
        self.indices = range(self.count)
        self.group = _dicom_group(ds) or f"file:{path.resolve()}"
        self._percentile: Window | None = None

    @staticmethod
    def _read(path: Path) -> Dataset:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            ds = _bare_dataset(path, pixels=True)  # no preamble: a bare data set
            if ds is None:
                raise UnreadableImage(
                    "not a DICOM file (no 'DICM' marker at byte 128, and no data set "
                    "that pydicom can parse): replace it with the original export, or "
                    "remove it"
                ) from None
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt
            raise UnreadableImage(
                f"a corrupt DICOM file ({_first_line(exc)}): export it again, or remove it"
            ) from None
        meta = ds.file_meta
        if "TransferSyntaxUID" not in meta:  # no meta: say what the parse found
            implicit, little = getattr(ds, "original_encoding", (True, True))
            if implicit is None:
                implicit, little = True, True
            meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit
                else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            )
        return ds

    @staticmethod
    def _check_is_image(ds: Dataset) -> None:
        sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        name = UID(str(sop)).name if sop else ""
        modality = str(ds.get("Modality", "") or "")
        if sop == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
            raise NotAnImage("DICOMDIR")
        if "Segmentation" in name or modality == "SEG":
            raise NotAnImage("SEG")  # label masks, not pictures of a patient
        if any(k in ds for k in PIXEL_KEYWORDS):
            return
        if "Image Storage" in name or ("Rows" in ds and "Columns" in ds):
            raise UnreadableImage(
                f"an image object ({name or 'it has rows and columns'}) without pixel data "
                "(no (7FE0,0010) element): export it again with its pixels, or remove it"
            )
        raise NotAnImage(modality or name or "no pixel data")

    def _check_decoder(self, ds: Dataset) -> None:
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian):
            return
        if not syntax.is_transfer_syntax:
            raise UnreadableImage(
                f"its transfer syntax UID {syntax} is not one: the file meta is corrupt, "
                "export it again"
            )
        if not syntax.is_compressed:  # deflated, or native pixels in another encoding
            return
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise UnreadableImage(
                f"its transfer syntax {syntax.name} ({syntax}) has no decoder in pydicom: "
                "convert it to an uncompressed syntax (e.g. gdcmconv --raw or dcmdjpeg)"
            ) from None
        if not decoder.is_available:
            raise MissingDecoderError(
                f"{self.path}: its pixels are compressed as {syntax.name} ({syntax}) and "
                "no decoder for it is installed; install the DICOM decoders (pylibjpeg "
                f"with its libjpeg, openjpeg and rle plugins) with: {DECODERS_INSTALL}"
            )

    def window(self, index: int, user: tuple[float, float] | None) -> Window:
        """The VOI transform of one frame (see the module's docstring for the order)."""
        if self.samples > 1 or self.photometric == "PALETTE COLOR":
            return Window("colour")
        if user is not None:
            return Window("user", float(user[0]), float(user[1]))
        voi = _functional_group(self.ds, index, "FrameVOILUTSequence") or self.ds
        if "WindowCenter" in voi and "WindowWidth" in voi:
            center, width = _first(voi.WindowCenter), _first(voi.WindowWidth)
            function = str(voi.get("VOILUTFunction") or self.ds.get("VOILUTFunction") or "")
            function = function.upper() or "LINEAR"
            # PS3.3 C.11.2.1.2: LINEAR needs a width of at least 1, the others above 0
            valid = width >= 1 if function == "LINEAR" else width > 0
            if not valid or function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
                raise UnreadableImage(
                    f"its header window (center {center:g}, width {width:g}, VOI LUT "
                    f"function {function}) is not valid: the width must be "
                    f"{'at least 1' if function == 'LINEAR' else 'greater than 0'}. Give a "
                    "window with --window=CENTER,WIDTH, which overrides the header"
                )
            return Window("header", center, width, function)
        if self.ds.get("VOILUTSequence"):
            return Window("voi_lut")
        if self._percentile is None:  # one window for all frames, from an even sample
            step = _stride(self.frames.shape[:3])
            sample = [
                self._modality(i, self.frames[i][::step, ::step]).reshape(-1)
                for i in range(0, self.count, step)
            ]
            self._percentile = percentile_window(np.concatenate(sample))
        return self._percentile

    def image(self, index: int, window: Window) -> np.ndarray:
        frame = self.frames[index]
        if window.source == "colour":
            grey = self._grey(frame)
        else:
            values = self._modality(index)
            grey = self._voi_lut(values) if window.source == "voi_lut" else window.apply(values)
            if self.photometric == "MONOCHROME1":  # low values are bright: invert
                grey = 1.0 - grey
        return _finish(grey)

    def _modality(self, index: int, frame: np.ndarray | None = None) -> np.ndarray:
        """Frame `index` (or a part of it) in the modality's units."""
        source = _functional_group(self.ds, index, "PixelValueTransformationSequence")
        frame = self.frames[index] if frame is None else frame
        return np.asarray(apply_modality_lut(frame, source or self.ds), dtype=np.float64)

    def _voi_lut(self, values: np.ndarray) -> np.ndarray:
        """Through the header's first VOI LUT, scaled by the LUT's own output range."""
        descriptor = self.ds.VOILUTSequence[0].LUTDescriptor
        entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        table = apply_voi(np.arange(first, first + entries), self.ds).astype(np.float64)
        lo, hi = float(table.min()), float(table.max())
        out = apply_voi(values, self.ds).astype(np.float64)
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        if self.photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, self.ds)
            top = float(np.iinfo(frame.dtype).max)
        else:  # pydicom gives RGB for the YBR syntaxes too
            top = float(2 ** int(self.ds.get("BitsStored", 8)) - 1)
        return (frame.astype(np.float64) @ LUMA) / top


def _dicom_group(ds: Dataset) -> str | None:
    """The patient of a DICOM image: its PatientID, else its study, else its series."""
    for keyword, kind in (
        ("PatientID", "patient"),
        ("StudyInstanceUID", "study"),
        ("SeriesInstanceUID", "series"),
    ):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return f"{kind}:{value}"
    return None


def _functional_group(ds: Dataset, index: int, keyword: str) -> Dataset | None:
    """An enhanced multi-frame file's per-frame (else shared) functional group item."""
    for container in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = ds.get(container)
        if not items:
            continue
        item = items[min(index, len(items) - 1)] if container[0] == "P" else items[0]
        sequence = item.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _first(value: Any) -> float:
    """The first of a multi-valued element (the header's first window)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _first_line(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line, cut short (decoders' messages run long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- NIfTI -----------------------------------------------------------------------------


class _NiftiImages:
    """A NIfTI volume in canonical orientation, sliced along one axis."""

    def __init__(self, path: Path, slice_axis: str, volume: int | None, slice_range):
        self.path = path
        try:
            img = nib.load(path)
            shape = tuple(int(n) for n in img.shape)
        except Exception as exc:  # noqa: BLE001 - nibabel's many complaints
            raise UnreadableImage(
                f"not a readable NIfTI file ({_first_line(exc)}): replace it, or remove it"
            ) from None
        while len(shape) > 3 and shape[-1] == 1:  # trailing single dimensions
            shape = shape[:-1]
        self.is_4d = len(shape) == 4
        try:
            if len(shape) > 4:
                raise UnreadableImage(
                    f"a {len(shape)}-D NIfTI ({'x'.join(map(str, shape))}); only 3-D volumes, "
                    "or one volume of a 4-D series (--volume), can be sliced"
                )
            if self.is_4d:
                img = self._one_volume(img, shape, volume)
                shape = shape[:3]
            # the stored values, scaled per slice: a scaled volume (scl_slope) read at
            # once would be float64, four times its int16 size
            stored, self.slope, self.inter = _unscaled(img)
            stored = stored.reshape(shape + (1,) * (3 - len(shape)))  # 2-D: one slice
            # the closest canonical (RAS+) orientation: what nib.as_closest_canonical
            # does, as views of the stored array
            orientation = nib.orientations.io_orientation(img.affine)
            data = nib.orientations.apply_orientation(stored, orientation)
        except UnreadableImage:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt data block
            raise UnreadableImage(
                f"its voxels cannot be read ({_first_line(exc)}); the file is corrupt or "
                "truncated: replace it"
            ) from None
        if data.dtype.kind not in "iuf":
            raise UnreadableImage(
                f"its voxels are {data.dtype} (colour or complex): only grey volumes of "
                "numbers can be sliced; convert it to one"
            )
        self.data = data
        self.axis = SLICE_AXES[slice_axis]
        self.slice_axis = slice_axis
        self.count = data.shape[self.axis]
        self.indices = self._selected(slice_range)
        self.group = f"volume:{path.resolve()}"
        self._percentile: Window | None = None

    @staticmethod
    def _one_volume(img, shape: tuple[int, ...], volume: int | None):
        n = shape[3]
        if volume is None:
            raise UnreadableImage(
                f"a 4-D NIfTI ({n} volumes of {'x'.join(map(str, shape[:3]))}); choose "
                f"one with --volume INDEX (0 to {n - 1})"
            )
        if volume >= n:
            raise UnreadableImage(
                f"a 4-D NIfTI of {n} volumes, and --volume {volume} is past the last: "
                f"choose 0 to {n - 1}"
            )
        return img.slicer[:, :, :, volume]

    def _selected(self, slice_range) -> range:
        if slice_range is None:
            return range(self.count)
        start, stop = slice_range
        chosen = range(self.count)[slice(start, stop)]
        if not chosen:
            raise UnreadableImage(
                f"the slice range {_range_text(slice_range)} holds none of its {self.count} "
                f"{self.slice_axis} slices: give one within 0:{self.count} with --slice-range"
            )
        return chosen

    def window(self, index: int, user: tuple[float, float] | None) -> Window:  # noqa: ARG002
        if user is not None:
            return Window("user", float(user[0]), float(user[1]))
        if self._percentile is None:  # one window for the whole volume, from a sample
            step = _stride(self.data.shape)
            self._percentile = percentile_window(self._scaled(self.data[::step, ::step, ::step]))
        return self._percentile

    def _scaled(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float64) * self.slope + self.inter

    def image(self, index: int, window: Window) -> np.ndarray:
        # a view (np.take would copy the whole flipped volume for every slice)
        plane = self._scaled(self.data[(slice(None),) * self.axis + (index,)])
        # canonical (a, b) plane -> rows from front/top down, columns from the patient's
        # right to left: the radiological view
        return _finish(window.apply(plane[::-1, ::-1].T))


def _unscaled(img) -> tuple[np.ndarray, float, float]:
    """A NIfTI image's stored voxels, with the slope and intercept that scale them."""
    proxy = img.dataobj
    if nib.is_proxy(proxy) and hasattr(proxy, "get_unscaled"):
        return np.asanyarray(proxy.get_unscaled()), float(proxy.slope), float(proxy.inter)
    return np.asanyarray(proxy), 1.0, 0.0


def _range_text(slice_range) -> str:
    start, stop = slice_range
    return f"{'' if start is None else start}:{'' if stop is None else stop}"


# --- shared ----------------------------------------------------------------------------


def _stride(shape: tuple[int, ...]) -> int:
    """A step along every axis that leaves at most about PERCENTILE_SAMPLE values."""
    size = float(np.prod(shape))
    return max(1, int(np.ceil((size / PERCENTILE_SAMPLE) ** (1 / len(shape)))))


def percentile_window(values: np.ndarray) -> Window:
    """The robust window of a file or volume (or an even sample of it): from its 0.5th
    to its 99.5th percentile (its full range when those are equal, as in a mostly empty
    image)."""
    flat = values.reshape(-1)
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if not flat.size:
        return Window("percentile", 0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(flat, PERCENTILES))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:  # a constant image: any window makes it blank
        return Window("percentile", lo, 1.0)
    return Window("percentile", (lo + hi) / 2, hi - lo)


def _finish(grey: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]; NaN voxels (outside a masked brain) become 0."""
    return np.clip(np.nan_to_num(grey, nan=0.0), 0.0, 1.0).astype(np.float32)


# --- groups file -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageGroups:
    """A groups file: the group (patient) of each listed image file.

    Paths are relative to the file's folder (or absolute) and compared after resolving
    links. A listed file gives its group to every image it holds, over any group from
    its header."""

    source: Path
    by_path: Mapping[Path, str] = field(default_factory=dict)

    def group_of(self, path: Path) -> str | None:
        return self.by_path.get(path.resolve())

    def listed_under(self, folder: Path) -> Iterator[Path]:
        """The listed files that lie inside `folder` (resolved)."""
        root = folder.resolve()
        for path in self.by_path:
            if path.is_relative_to(root):
                yield path


def read_groups_file(path: Path) -> ImageGroups:
    """Parse a groups CSV: one line "image path,group" per image file, an optional
    header line "path,group". Raises AuditInputError naming the line to fix."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(
            f"the groups file {path} does not exist: check the path given with --groups"
        )
    base = path.parent
    by_path: dict[Path, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AuditInputError(f"the groups file {path} cannot be read ({exc})") from None
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells] == ["path", "group"]:
            continue
        if len(cells) != 2 or not cells[0]:
            raise AuditInputError(
                f"the groups file {path}, line {number}: expected 'image path,group', "
                f"got {','.join(row)!r}"
            )
        if not cells[1]:
            raise AuditInputError(
                f"the groups file {path}, line {number}: the group of {cells[0]} is empty"
            )
        image = (base / cells[0]).resolve()
        group = f"patient:{cells[1]}"
        if by_path.setdefault(image, group) != group:
            raise AuditInputError(
                f"the groups file {path}, line {number}: {cells[0]} is listed again with "
                f"another group ({by_path[image][8:]!r}, then {cells[1]!r}): keep one"
            )
    if not by_path:
        raise AuditInputError(f"the groups file {path} lists no images ('image path,group')")
    return ImageGroups(path, MappingProxyType(by_path))
