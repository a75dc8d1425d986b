"""NIfTI volumes as 2-D grey images in [0, 1].

The volume is reoriented to the closest canonical (RAS+) orientation and sliced along
one axis (axial by default); each slice is shown as a radiologist would view it
(anterior or superior at the top, the patient's right on the left), which is how a
DICOM viewer shows the same acquisition. Intensity: the user's window, else the
volume's 0.5-99.5 percentile window. A 4-D series needs one volume chosen (`--volume`).

The header is read on opening (shape, orientation, scaling: what the pixel budget and
the slice range need); the voxels when `load` is called.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import UnreadableImage, library_detail
from .settings import SliceAxis
from .windowing import Window, percentile_window, stride, user_window

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# axes of the canonical (RAS+) array: x runs to the patient's right, y to the front,
# z to the head
SLICE_AXES = {SliceAxis.SAGITTAL: 0, SliceAxis.CORONAL: 1, SliceAxis.AXIAL: 2}


class NiftiImages:
    """A NIfTI volume in canonical orientation, sliced along one axis."""

    def __init__(self, path: Path, slice_axis: str, volume: int | None, slice_range):
        self.path = path
        try:
            img = nib.load(path)
            shape = tuple(int(n) for n in img.shape)
        except Exception as exc:  # noqa: BLE001 - nibabel's many complaints
            raise UnreadableImage(
                f"not a readable NIfTI file ({library_detail(exc)}): replace it, or remove it"
            ) from None
        while len(shape) > 3 and shape[-1] == 1:  # trailing single dimensions
            shape = shape[:-1]
        if len(shape) > 4:
            raise UnreadableImage(
                f"a {len(shape)}-D NIfTI ({'x'.join(map(str, shape))}); only 3-D volumes, or "
                "one volume of a 4-D series (--volume), can be sliced"
            )
        self.is_4d = len(shape) == 4
        if self.is_4d:
            img = self._one_volume(img, shape, volume)
            shape = shape[:3]
        self.shape = shape + (1,) * (3 - len(shape))  # 2-D: one slice
        self.pixels = math.prod(self.shape)
        try:
            # the closest canonical (RAS+) orientation: what nib.as_closest_canonical
            # does, as views of the stored array
            self.orientation = nib.orientations.io_orientation(img.affine)
            canonical = [0, 0, 0]
            for axis, length in zip(self.orientation[:, 0], self.shape, strict=True):
                canonical[int(axis)] = length
        except Exception as exc:  # noqa: BLE001 - a header whose affine means nothing
            raise UnreadableImage(
                f"its orientation (the affine of its header) cannot be read "
                f"({library_detail(exc)}): correct the header, or replace the file"
            ) from None
        self.img = img
        self.axis = SLICE_AXES[slice_axis]
        self.slice_axis = slice_axis
        self.count = canonical[self.axis]
        self.indices = self._selected(slice_range)
        self.group = f"volume:{path.resolve()}"
        self.data: np.ndarray | None = None
        self._percentile: Window | None = None

    def load(self) -> None:
        """Read the voxels, as stored (scaled per slice: a scaled volume read at once
        would be float64, four times its int16 size)."""
        try:
            stored, self.slope, self.inter = _unscaled(self.img)
            stored = stored.reshape(self.shape)
            data = nib.orientations.apply_orientation(stored, self.orientation)
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt data block
            raise UnreadableImage(
                f"its voxels cannot be read ({library_detail(exc)}); the file is corrupt or "
                "truncated: replace it"
            ) from None
        if data.dtype.kind not in "iuf":
            raise UnreadableImage(
                f"its voxels are {data.dtype} (colour or complex): only grey volumes of "
                "numbers can be sliced; convert it to one"
            )
        if not (math.isfinite(self.slope) and math.isfinite(self.inter)):
            raise UnreadableImage(
                "its scaling (scl_slope, scl_inter) is not a pair of finite numbers: correct "
                "the header, or replace the file"
            )
        self.data = data

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
            return user_window(user)
        if self._percentile is None:  # one window for the whole volume, from a sample
            data = self._voxels()
            step = stride(data.shape)
            self._percentile = percentile_window(self._scaled(data[::step, ::step, ::step]))
        return self._percentile

    def image(self, index: int, window: Window) -> np.ndarray:
        # a view (np.take would copy the whole flipped volume for every slice)
        plane = self._scaled(self._voxels()[(slice(None),) * self.axis + (index,)])
        # canonical (a, b) plane -> rows from front/top down, columns from the patient's
        # right to left: the radiological view
        return window.apply(plane[::-1, ::-1].T)

    def _voxels(self) -> np.ndarray:
        if self.data is None:
            self.load()
        assert self.data is not None
        return self.data

    def _scaled(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float64) * self.slope + self.inter


def _unscaled(img) -> tuple[np.ndarray, float, float]:
    """A NIfTI image's stored voxels, with the slope and intercept that scale them."""
    proxy = img.dataobj
    if nib.is_proxy(proxy) and hasattr(proxy, "get_unscaled"):
        return np.asanyarray(proxy.get_unscaled()), float(proxy.slope), float(proxy.inter)
    return np.asanyarray(proxy), 1.0, 0.0


def _range_text(slice_range) -> str:
    start, stop = slice_range
    return f"{'' if start is None else start}:{'' if stop is None else stop}"
