"""How a medical image's values become grey in [0, 1]: the VOI window (PS3.3 C.11.2),
which DICOM and NIfTI share.

A window comes from the user (`--window`, in the modality's units, for every input),
from a DICOM header, or from the file's own values (the 0.5th to 99.5th percentile);
which one was used is kept with each image (`Window.source`) and counted for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

PERCENTILES = (0.5, 99.5)
# the percentiles come from at most this many voxels (an even stride through the
# volume): the same window, far faster than sorting a whole CT
PERCENTILE_SAMPLE = 4_000_000


class WindowSource(str, Enum):
    """Where an image's window came from."""

    USER = "user"  # --window
    HEADER = "header"  # the DICOM header's first Window Center / Width
    VOI_LUT = "voi_lut"  # the DICOM header's VOI LUT Sequence
    PERCENTILE = "percentile"  # 0.5-99.5 over the file or volume
    COLOUR = "colour"  # a colour image, scaled by its bit depth: no window applies

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Window:
    """The VOI transform that mapped an image's values to [0, 1], and where it came from."""

    source: WindowSource
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
            return str(self.source)
        lo, hi = PERCENTILES
        name = (
            f"percentile {lo:g}-{hi:g}"
            if self.source is WindowSource.PERCENTILE
            else str(self.source)
        )
        return f"{name} {self.center:g}/{self.width:g}"


def user_window(window: tuple[float, float]) -> Window:
    return Window(WindowSource.USER, float(window[0]), float(window[1]))


def stride(shape: tuple[int, ...]) -> int:
    """A step along every axis that leaves at most about PERCENTILE_SAMPLE values."""
    size = float(np.prod(shape))
    return max(1, int(np.ceil((size / PERCENTILE_SAMPLE) ** (1 / len(shape)))))


def percentile_window(values: np.ndarray) -> Window:
    """The robust window of a file or volume (or an even sample of it): from its 0.5th
    to its 99.5th percentile (its full range when those are equal, as in a mostly empty
    image). Non-finite values are left out."""
    flat = values.reshape(-1)
    flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if not flat.size:
        return Window(WindowSource.PERCENTILE, 0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(flat, PERCENTILES))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:  # a constant image: any window makes it blank
        return Window(WindowSource.PERCENTILE, lo, 1.0)
    return Window(WindowSource.PERCENTILE, (lo + hi) / 2, hi - lo)


def finish(grey: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]; NaN voxels (outside a masked brain) become 0."""
    return np.clip(np.nan_to_num(grey, nan=0.0), 0.0, 1.0).astype(np.float32)
