"""Medical files (DICOM, dicom.py; NIfTI, nifti.py) as 2-D grey images in [0, 1], each
with its content hash and its patient (group).

A file is opened in two steps: its header (which says how many pixels it holds, checked
against the pixel budget before any is decoded), then its pixels. While a set's files
are hashed in threads, a `PixelBudget` lets at most `max_pixels` pixels be decoded at
once, so peak memory stays bounded whatever the files claim.

Every image carries a group: the DICOM PatientID (else the study, the series, the
file), the NIfTI volume, or a line of a groups file (groups.py). Images whose pixels
are all equal after the pipeline (the empty slices at a volume's edges) are left out
as blank, and named: they hold nothing to compare, and identical blank slices of two
patients would look like one image in both `used` and `not_used`.

The readers' warnings are silenced while they read (`quiet_readers`): pydicom's quote
the header values they found invalid, and those may identify a patient.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import DicomImages, looks_like_dicom
from .errors import MissingDecoderError, NotAnImage, UnreadableImage, library_detail
from .nifti import NIFTI_SUFFIXES, SLICE_AXES, NiftiImages
from .settings import MAX_PIXELS, SliceAxis  # decoded, a pixel takes 2 to 8 bytes each
from .windowing import Window, finish

DICOM = "dicom"
NIFTI = "nifti"
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})  # .ima: Siemens' exports
BLANK = "blank"  # why an image was left out: all its pixels are equal


@dataclass(frozen=True)
class DecodeOptions:
    """How medical files become 2-D images: the settings `window`, `slice_axis`,
    `slice_range`, `volume` and `max_pixels`. The defaults read every file as the
    header says."""

    # (center, width) in the modality's units (HU for CT); overrides every header
    window: tuple[float, float] | None = None
    slice_axis: SliceAxis = SliceAxis.AXIAL  # NIfTI: sagittal, coronal or axial slices
    # NIfTI: slices START <= i < STOP of the canonical volume (None: from the first / to
    # the last)
    slice_range: tuple[int | None, int | None] | None = None
    volume: int | None = None  # NIfTI: the volume of a 4-D series
    max_pixels: int = MAX_PIXELS

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
            max_pixels=settings.max_pixels,
        )


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
    max_pixels: int = MAX_PIXELS  # the budget the file was read under


@dataclass
class MedicalFile:
    """The images of one medical file, with the content hash of each (in file order),
    and what it holds that is left out: blank images (by index), or the kind of a
    DICOM object that holds no image."""

    images: list[tuple[FrameRef, str]]
    group: str
    images_in_file: int = 1
    blank: list[int] = field(default_factory=list)
    non_image: str | None = None


class PixelBudget:
    """At most `limit` pixels decoded at once among the threads that read a set's files.
    A file over the limit is refused from its header (`check`); the others wait for
    their turn (`held`). One file alone may always proceed."""

    def __init__(self, limit: int = MAX_PIXELS):
        self.limit = limit
        self.in_use = 0
        self._turn = threading.Condition()

    def check(self, pixels: int, what: str) -> None:
        if pixels > self.limit:
            raise UnreadableImage(
                f"too large: its header says {what} hold {pixels:,} pixels, over the limit of "
                f"{self.limit:,} (about {pixels * 2 / 2**30:.1f} GiB or more decoded); if the "
                "file is sound and memory allows, raise the limit with --max-pixels, else "
                "leave the file out"
            )

    @contextmanager
    def held(self, pixels: int) -> Iterator[None]:
        with self._turn:
            self._turn.wait_for(lambda: self.in_use == 0 or self.in_use + pixels <= self.limit)
            self.in_use += pixels
        try:
            yield
        finally:
            with self._turn:
                self.in_use -= pixels
                self._turn.notify_all()


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
    with quiet_readers():
        return DICOM if looks_like_dicom(path) else None


def read_medical_file(
    path: Path, fmt: str, options: DecodeOptions, budget: PixelBudget | None = None
) -> MedicalFile:
    """Every image of a DICOM or NIfTI file, decoded once and hashed (the pixels are
    not kept). Raises NotAnImage, UnreadableImage or MissingDecoderError."""
    budget = budget or PixelBudget(options.max_pixels)
    with quiet_readers(), _as_unreadable():
        try:
            opened = _open(path, fmt, options.slice_axis, options.volume, options.slice_range)
        except NotAnImage as exc:
            return MedicalFile([], "", non_image=exc.kind)
        budget.check(opened.pixels, _holding(fmt))
        with budget.held(opened.pixels):
            opened.load()
            images: list[tuple[FrameRef, str]] = []
            blank = []
            for index in opened.indices:
                window = opened.window(index, options.window)
                pixels = finish(opened.image(index, window))
                if pixels.ndim != 2 or min(pixels.shape) < 2:
                    raise UnreadableImage(
                        f"its images are {'x'.join(map(str, pixels.shape))} pixels, too small to "
                        "compare: the header's size fields are wrong, export it again"
                    )
                if pixels.min() == pixels.max():
                    blank.append(index)
                    continue
                ref = FrameRef(
                    path=path,
                    format=fmt,
                    index=index,
                    window=window,
                    images_in_file=opened.count,
                    slice_axis=options.slice_axis if fmt == NIFTI else None,
                    volume=options.volume if fmt == NIFTI and opened.is_4d else None,
                    max_pixels=options.max_pixels,
                )
                images.append((ref, pixel_hash(pixels)))
    group = opened.group or f"file:{path.resolve()}"
    return MedicalFile(images, group, opened.count, blank)


def read_image(ref: FrameRef) -> np.ndarray:
    """One image of a medical file as a 2-D float32 array in [0, 1], exactly as it was
    hashed. The file last opened by this process is kept open: the images of one
    file are neighbours in a set, so a volume is read once per pass and worker."""
    with quiet_readers(), _as_unreadable():
        opened = _open_cached(
            ref.path, ref.format, ref.slice_axis, ref.volume, ref.max_pixels, _stamp(ref.path)
        )
        return finish(opened.image(ref.index, ref.window))


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


def _holding(fmt: str) -> str:
    return "its rows x columns x frames" if fmt == DICOM else "its volume's voxels"


def _stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=1)
def _open_cached(path, fmt, slice_axis, volume, max_pixels, stamp):  # noqa: ARG001 - stamp: key
    opened = _open(path, fmt, slice_axis or "axial", volume, None)
    PixelBudget(max_pixels).check(opened.pixels, _holding(fmt))  # the file may have changed
    opened.load()
    return opened


def _open(path: Path, fmt: str, slice_axis: str, volume: int | None, slice_range):
    if fmt == DICOM:
        return DicomImages(path)
    return NiftiImages(path, slice_axis, volume, slice_range)


@contextmanager
def _as_unreadable() -> Iterator[None]:
    """Whatever else a reader raises on a hostile file is that file's fault: a bad
    file named with the reader's complaint, not a crash of the audit."""
    try:
        yield
    except (NotAnImage, UnreadableImage, MissingDecoderError):
        raise
    except MemoryError:
        raise UnreadableImage(
            "decoding it needs more memory than is free: lower --max-pixels to leave it out, "
            "or free memory"
        ) from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a Rust decoder's panic is no Exception
        raise UnreadableImage(
            f"it cannot be read ({type(exc).__name__}: {library_detail(exc)}): the file is "
            "corrupt, replace it or remove it"
        ) from None


# pydicom's and nibabel's warnings, whichever of their modules (or ours) they name
_READERS = r"(pydicom|nibabel|pytest_gan_privacy\.(medical|dicom|nifti))(\.|$)"


class _QuietReaders:
    """Silences the DICOM and NIfTI readers' warnings while files are read, in every
    thread that reads. One filter is added while any thread reads and removed after
    the last, so that threads cannot restore each other's filters (as nested
    `warnings.catch_warnings` would across threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers = 0
        self.entry: tuple | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.readers == 0:
                warnings.filterwarnings("ignore", module=_READERS)
                self.entry = warnings.filters[0]
            self.readers += 1
        try:
            yield
        finally:
            with self.lock:
                self.readers -= 1
                if self.readers == 0 and self.entry in warnings.filters:
                    warnings.filters.remove(self.entry)  # (a catch_warnings may have reset it)


quiet_readers = _QuietReaders()
