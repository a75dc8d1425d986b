"""DICOM files as 2-D grey images in [0, 1], as the standard reads them (PS3.3 C.11,
PS3.4 N.2):

1. the modality LUT: Rescale Slope / Intercept (or a Modality LUT Sequence) give the
   modality's units, Hounsfield units for CT;
2. the VOI transform, the first that applies: the user's window (`--window`); the
   header's first Window Center / Width (per frame in an enhanced multi-frame file);
   the header's VOI LUT Sequence; else a robust window over the file's pixels, from the
   0.5th to the 99.5th percentile (windowing.py);
3. MONOCHROME1 inverted, so that high always means bright; colour (RGB, YBR, palette)
   reduced to grey with the ITU-R BT.601 weights that Pillow's "L" uses.

A multi-frame file gives one image per frame. Objects that are not images (DICOMDIR,
SR, RTSTRUCT, RTPLAN, SEG masks, waveforms) are NotAnImage: left out and counted.

Every attribute that decides pixels is read here, through `_number` and `_count`, and
nowhere else. An attribute that is absent or empty takes its documented fallback: an
empty Window Center / Width is no window (the next VOI source applies), an empty Rescale
Slope / Intercept is 1 / 0, as when they are absent. One that is present but not a finite
number makes the file unreadable, with a message that names the attribute and never its
value: header values may identify a patient.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    UID_dictionary,
)

from .errors import MissingDecoderError, NotAnImage, UnreadableImage, library_detail
from .windowing import Window, WindowSource, percentile_window, stride, user_window

# the package depends on these: a missing one is a broken installation
DECODERS_INSTALL = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# ITU-R BT.601 luma, the weights of Pillow's "L" conversion: a colour DICOM and the
# same picture as a PNG become the same grey
LUMA = np.array([0.299, 0.587, 0.114])
PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_420",
        "YBR_PARTIAL_422",
        "YBR_ICT",
        "YBR_RCT",
    }
)
# objects that hold no picture of a patient, by Modality (a Defined Term: only these
# are named in counts, never another header's text)
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SEG", "KO", "PR", "DOC", "REG", "FID"}
    | {"ECG", "HD", "AU", "RWV", "PLAN", "RESP", "EPS", "IVOCT"}
)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
WINDOW_FIX = "give a window with --window=CENTER,WIDTH, which overrides the header"
RESCALE_FIX = (
    "the modality LUT gives the modality's units (HU for CT) and cannot be guessed: "
    "correct that attribute, or export the file again"
)


# --- attributes ------------------------------------------------------------------------


def attribute(keyword: str) -> str:
    """An attribute as messages name it, e.g. "Window Center (0028,1050)"."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _values(item: Dataset, keyword: str) -> list[Any] | None:
    """An attribute's values, or None when it is absent or empty."""
    try:
        value = item.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert
        raise UnreadableImage(
            f"its {attribute(keyword)} cannot be read: correct it, or export the file again"
        ) from None
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    values = [v for v in values if v is not None and str(v).strip() != ""]
    return values or None


def _number(item: Dataset, keyword: str, fix: str) -> float | None:
    """The first value of a numeric attribute; None when it is absent or empty."""
    values = _values(item, keyword)
    if values is None:
        return None
    try:
        number = float(values[0])
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise UnreadableImage(f"its {attribute(keyword)} is not a finite number: {fix}")
    return number


def _count(item: Dataset, keyword: str, default: int) -> int:
    """A whole-number attribute of at least 1 (Rows, Number of Frames...)."""
    number = _number(item, keyword, "correct it, or export the file again")
    if number is None:
        return default
    if number != int(number) or number < 1:
        raise UnreadableImage(
            f"its {attribute(keyword)} is not a whole number of at least 1: correct it, or "
            "export the file again"
        )
    return int(number)


def _text(item: Dataset, keyword: str) -> str:
    values = _values(item, keyword)
    return "" if values is None else str(values[0]).strip().upper()


def pixel_count(ds: Dataset) -> int:
    """The values the file's pixel data decodes to, from the header alone: rows x
    columns x frames x samples."""
    return (
        _count(ds, "Rows", 1)
        * _count(ds, "Columns", 1)
        * _count(ds, "NumberOfFrames", 1)
        * _count(ds, "SamplesPerPixel", 1)
    )


def patient_of(ds: Dataset) -> str | None:
    """The patient of a DICOM image (kept internal: it is never shown): its PatientID,
    else its study, else its series."""
    for keyword, kind in (
        ("PatientID", "patient"),
        ("StudyInstanceUID", "study"),
        ("SeriesInstanceUID", "series"),
    ):
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:  # noqa: BLE001 - an unreadable identifier is no identifier
            value = ""
        if value:
            return f"{kind}:{value}"
    return None


# --- recognising a DICOM file ----------------------------------------------------------


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
        if not any(k in ds for k in ("SOPClassUID", "Modality", *PIXEL_KEYWORDS)):
            return None
    except Exception:  # noqa: BLE001 - anything that does not parse is not DICOM
        return None
    return ds


def _read(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = _bare_dataset(path, pixels=True)  # no preamble: a bare data set
        if ds is None:
            raise UnreadableImage(
                "not a DICOM file (no 'DICM' marker at byte 128, and no data set that "
                "pydicom can parse): replace it with the original export, or remove it"
            ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt
        raise UnreadableImage(
            f"a corrupt DICOM file ({library_detail(exc)}): export it again, or remove it"
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


def _sop_class(ds: Dataset) -> str:
    """The SOP class's name when it is one the standard defines ("" otherwise)."""
    for item, keyword in ((ds, "SOPClassUID"), (ds.file_meta, "MediaStorageSOPClassUID")):
        values = _values(item, keyword)
        if values is not None and str(values[0]) in UID_dictionary:
            return UID(str(values[0])).name
    return ""


def _check_is_image(ds: Dataset) -> None:
    """NotAnImage for an object known to hold no picture; UnreadableImage for one that
    should and does not, or that is nothing the standard defines (a "DICM" marker
    followed by garbage is a broken file, not an object to leave out unnamed)."""
    sop = _sop_class(ds)
    modality = _text(ds, "Modality")
    if sop == MediaStorageDirectoryStorage.name or "DirectoryRecordSequence" in ds:
        raise NotAnImage("DICOMDIR")
    if "Segmentation" in sop or modality == "SEG":
        raise NotAnImage("SEG")  # label masks, not pictures of a patient
    if any(k in ds for k in PIXEL_KEYWORDS):
        return
    if "Image Storage" in sop or ("Rows" in ds and "Columns" in ds):
        raise UnreadableImage(
            f"an image object ({sop or 'it has rows and columns'}) without pixel data "
            "(no (7FE0,0010) element): export it again with its pixels, or remove it"
        )
    if modality in NON_IMAGE_MODALITIES:
        raise NotAnImage(modality)
    if sop:
        raise NotAnImage(sop)
    raise UnreadableImage(
        "no image in it: neither pixel data nor a SOP class the standard defines (a "
        "corrupt or truncated file?): export it again, or remove it"
    )


def _check_decoder(path: Path, ds: Dataset) -> None:
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian):
        return
    if not syntax.is_transfer_syntax:
        raise UnreadableImage(
            f"its {attribute('TransferSyntaxUID')} is not a transfer syntax the standard "
            "defines: the file meta is corrupt, export it again"
        )
    if not syntax.is_compressed:  # deflated, or native pixels in another encoding
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnreadableImage(
            f"its transfer syntax {syntax.name} ({syntax}) has no decoder in pydicom: convert "
            "it to an uncompressed syntax (e.g. gdcmconv --raw or dcmdjpeg)"
        ) from None
    if not decoder.is_available:
        raise MissingDecoderError(
            f"{path}: its pixels are compressed as {syntax.name} ({syntax}) and no decoder for "
            "it is installed; install the DICOM decoders (pylibjpeg with its libjpeg, openjpeg and "
            f"rle plugins) with: {DECODERS_INSTALL}"
        )


# --- the images ------------------------------------------------------------------------


class DicomImages:
    """A DICOM file's frames with the header that maps them to grey. The header is read
    on opening; the pixels when `load` is called (after the pixel budget allows it)."""

    def __init__(self, path: Path):
        self.path = path
        ds = _read(path)
        _check_is_image(ds)
        _check_decoder(path, ds)
        self.ds = ds
        self.pixels = pixel_count(ds)
        self.count = _count(ds, "NumberOfFrames", 1)
        self.indices = range(self.count)
        self.samples = _count(ds, "SamplesPerPixel", 1)
        self.photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
        if self.photometric not in PHOTOMETRIC:
            raise UnreadableImage(
                f"its {attribute('PhotometricInterpretation')} is not one the standard "
                "defines: correct it, or export the file again"
            )
        self.group = patient_of(ds)
        self.frames: np.ndarray | None = None
        self._percentile: Window | None = None

    def load(self) -> None:
        """Decode the pixel data (every frame)."""
        try:
            frames = self.ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - a decoder's or pydicom's complaint
            raise UnreadableImage(
                f"its pixel data cannot be decoded ({library_detail(exc)}); the file is "
                "corrupt or incomplete: export it again"
            ) from None
        # one leading frame axis, also for a single frame
        single = frames.ndim == (3 if self.samples > 1 else 2)
        self.frames = frames[None] if single else frames
        self.count = self.frames.shape[0]
        self.indices = range(self.count)

    def window(self, index: int, user: tuple[float, float] | None) -> Window:
        """The VOI transform of one frame (see the module's docstring for the order)."""
        if self.samples > 1 or self.photometric == "PALETTE COLOR":
            return Window(WindowSource.COLOUR)
        if user is not None:
            return user_window(user)
        voi = _functional_group(self.ds, index, "FrameVOILUTSequence") or self.ds
        center = _number(voi, "WindowCenter", WINDOW_FIX)
        width = _number(voi, "WindowWidth", WINDOW_FIX)
        if center is not None and width is not None:
            function = _text(voi, "VOILUTFunction") or _text(self.ds, "VOILUTFunction")
            function = function or "LINEAR"
            if function not in VOI_FUNCTIONS:
                raise UnreadableImage(
                    f"its {attribute('VOILUTFunction')} is none of {', '.join(VOI_FUNCTIONS)}: "
                    f"{WINDOW_FIX}"
                )
            # PS3.3 C.11.2.1.2: LINEAR needs a width of at least 1, the others above 0
            if not (width >= 1 if function == "LINEAR" else width > 0):
                raise UnreadableImage(
                    f"its {attribute('WindowWidth')} is not valid: it must be "
                    f"{'at least 1' if function == 'LINEAR' else 'greater than 0'}. {WINDOW_FIX}"
                )
            return Window(WindowSource.HEADER, center, width, function)
        if self.ds.get("VOILUTSequence"):
            return Window(WindowSource.VOI_LUT)
        if self._percentile is None:  # one window for all frames, from an even sample
            frames = self._frames()
            step = stride(frames.shape[:3])
            sample = [
                self._modality(i, frames[i][::step, ::step]).reshape(-1)
                for i in range(0, self.count, step)
            ]
            self._percentile = percentile_window(np.concatenate(sample))
        return self._percentile

    def image(self, index: int, window: Window) -> np.ndarray:
        frame = self._frames()[index]
        if window.source is WindowSource.COLOUR:
            return self._grey(frame)
        values = self._modality(index)
        if window.source is WindowSource.VOI_LUT:
            grey = self._voi_lut(values)
        else:
            grey = window.apply(values)
        if self.photometric == "MONOCHROME1":  # low values are bright: invert
            grey = 1.0 - grey
        return grey

    def _frames(self) -> np.ndarray:
        if self.frames is None:
            self.load()
        assert self.frames is not None
        return self.frames

    def _modality(self, index: int, frame: np.ndarray | None = None) -> np.ndarray:
        """Frame `index` (or a part of it) in the modality's units."""
        source = _functional_group(self.ds, index, "PixelValueTransformationSequence") or self.ds
        frame = self._frames()[index] if frame is None else frame
        if source.get("ModalityLUTSequence"):
            try:
                return np.asarray(apply_modality_lut(frame, source), dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - a malformed LUT
                raise UnreadableImage(
                    f"its {attribute('ModalityLUTSequence')} cannot be applied "
                    f"({library_detail(exc)}): {RESCALE_FIX}"
                ) from None
        slope = _number(source, "RescaleSlope", RESCALE_FIX)
        intercept = _number(source, "RescaleIntercept", RESCALE_FIX)
        values = frame.astype(np.float64)
        if slope is not None and slope != 1:
            values *= slope
        if intercept:
            values += intercept
        return values

    def _voi_lut(self, values: np.ndarray) -> np.ndarray:
        """Through the header's first VOI LUT, scaled by the LUT's own output range."""
        try:
            descriptor = self.ds.VOILUTSequence[0].LUTDescriptor
            entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
            table = apply_voi(np.arange(first, first + entries), self.ds).astype(np.float64)
            lo, hi = float(table.min()), float(table.max())
            out = apply_voi(values, self.ds).astype(np.float64)
        except Exception as exc:  # noqa: BLE001 - a malformed LUT
            raise UnreadableImage(
                f"its {attribute('VOILUTSequence')} cannot be applied ({library_detail(exc)}): "
                f"{WINDOW_FIX}"
            ) from None
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        if self.photometric == "PALETTE COLOR":
            try:
                frame = apply_color_lut(frame, self.ds)
            except Exception as exc:  # noqa: BLE001 - a malformed palette
                raise UnreadableImage(
                    f"its palette cannot be applied ({library_detail(exc)}): export it again"
                ) from None
            top = float(np.iinfo(frame.dtype).max)
        else:  # pydicom gives RGB for the YBR syntaxes too
            top = float(2 ** _count(self.ds, "BitsStored", 8) - 1)
        return (frame.astype(np.float64) @ LUMA) / top


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
