"""Finding, hashing and decoding images.

Images are found recursively, identified by the SHA-256 of their bytes and kept in
hash order, so that no result depends on file names or on the order of a listing.
Pixels are decoded in batches by a torch DataLoader (parallel workers), brought to
the encoder's size and channels, and never all held in memory at full size.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from .errors import AuditInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

# Decompression-bomb guard: PIL refuses images over twice this many pixels and
# warns above it; we turn the warning into a refusal too (a bad file, not a crash).
MAX_IMAGE_PIXELS = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


@dataclass
class ImageSet:
    """Images of one role (generated, used, not_used), in content-hash order."""

    role: str
    folder: Path
    paths: list[Path]
    hashes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ids(self) -> list[str]:
        """Paths relative to the folder: how the report names an image."""
        return [p.relative_to(self.folder).as_posix() for p in self.paths]

    def manifest_sha256(self) -> str:
        """One hash of all the images' contents, tying a report to its exact data."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()


def find_images(folder: Path, role: str) -> list[Path]:
    """All image files under `folder`, recursively, without following links to folders."""
    folder = Path(folder)
    if not folder.exists():
        flag = role.replace("_", "-")
        raise AuditInputError(
            f"the {role} folder {folder} does not exist: check the path given with --{flag} "
            f"(command line) or --gan-audit-{flag} / gan_audit_{role} (pytest)"
        )
    if not folder.is_dir():
        raise AuditInputError(f"the {role} path {folder} is not a folder: give a folder of images")
    found: list[Path] = []
    others = 0
    for root, _dirs, files in os.walk(folder):  # os.walk does not follow folder links
        for name in files:
            path = Path(root, name)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            else:
                others += 1
    if not found:
        what = f"only {others} non-image files" if others else "no files"
        raise AuditInputError(
            f"the {role} folder {folder} has {what}; it needs images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}), searched recursively"
        )
    return found


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_image_set(folder: Path, role: str) -> ImageSet:
    """Find the images of one role and hash their contents (hashing reads in threads)."""
    paths = find_images(folder, role)
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashes = list(pool.map(_sha256, paths))
    order = sorted(range(len(paths)), key=lambda i: (hashes[i], str(paths[i])))
    return ImageSet(
        role=role,
        folder=Path(folder),
        paths=[paths[i] for i in order],
        hashes=[hashes[i] for i in order],
    )


def decode_image(data: bytes, size: int, channels: int) -> torch.Tensor:
    """Image file bytes -> float tensor (channels, size, size) with values in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535, float images are min-max
    scaled. Colour is reduced to grey for one channel; grey is repeated for three.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            if min(img.size) < 2:
                raise ValueError(f"{img.size[0]}x{img.size[1]} pixels is too small to compare")
            if img.format == "JPEG":  # decode big JPEGs at a reduced scale
                img.draft("L" if channels == 1 else "RGB", (size, size))
            pixels = _to_array(img, channels)
    tensor = torch.from_numpy(pixels)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    if tensor.shape[1:] != (size, size):
        # antialias keeps down-sampling from aliasing fine detail into noise
        tensor = F.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return tensor.clamp_(0.0, 1.0).contiguous()


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if mode == "I" and arr.min() >= 0 and arr.max() <= 65535:
            return arr / 65535.0
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    return np.asarray(img, dtype=np.float32) / 255.0


class _DecodeDataset(Dataset):
    """Decodes one image per index; a bad file becomes an error string, not a crash."""

    def __init__(self, paths: list[Path], size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return decode_image(path.read_bytes(), self.size, self.channels), index, ""
        except Exception as exc:  # noqa: BLE001 - every decoding failure is reported by file
            empty = torch.zeros(self.channels, self.size, self.size)
            return empty, index, _describe_decode_error(exc)


def _describe_decode_error(exc: Exception) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large (over {MAX_IMAGE_PIXELS:,} pixels); down-sample it first"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image that Pillow can read (wrong extension, empty or corrupt file)"
    if isinstance(exc, OSError):
        return f"corrupt or truncated image ({exc})"
    return f"cannot be decoded ({exc})"


def default_workers() -> int:
    """Decoding workers: the spare CPU cores, at most 4 (0 decodes in this process)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def iter_batches(
    images: ImageSet,
    size: int,
    channels: int,
    batch_size: int,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Yield (pixels, indices) batches of decoded images, in the set's (hash) order.

    Raises AuditInputError listing every file that could not be decoded, after the
    pass, so that one run reports all of them.
    """
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _DecodeDataset(images.paths, size, channels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
    )
    bad: list[str] = []
    for pixels, indices, errors in loader:
        keep = [i for i, err in enumerate(errors) if not err]
        for i, err in enumerate(errors):
            if err:
                bad.append(f"{images.paths[int(indices[i])]}: {err}")
        if keep:
            yield pixels[keep], [int(indices[i]) for i in keep]
    if bad:
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise AuditInputError(
            f"{len(bad)} of {len(images)} {images.role} images could not be read; "
            f"remove or replace them:\n  {shown}{more}"
        )
