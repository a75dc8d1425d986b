"""Finding, hashing and decoding images.

Images are found recursively, identified by the SHA-256 of their bytes and kept in
hash order, so that no result depends on file names or on the order of a listing.
Pixels are decoded in batches by a torch DataLoader (parallel workers), brought to
the encoder's size and channels, and never all held in memory at full size.

Links: links to files are followed wherever they point (datasets kept in git-annex,
DVC or a shared store are links out of the folder), and so are links to folders, each
real folder once, so a link loop cannot hang the search or count an image twice.
A broken link, a pipe or a device file is a bad file, reported by name like an
unreadable image.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
# Below it, a large image costs its native size once while decoding (at most 1 GiB,
# RGBA), then is box-reduced before any float copy is made.
MAX_IMAGE_PIXELS = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
SHOWN_BAD_FILES = 20


@dataclass
class ImageSet:
    """Images of one role (generated, used, not_used), in content-hash order."""

    role: str
    folder: Path
    paths: list[Path]
    hashes: list[str]
    # leave unreadable images out (listed in `skipped`, path -> reason) instead of stopping
    skip_bad: bool = False
    skipped: dict[Path, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def report_bad(self, bad: dict[Path, str], total: int) -> None:
        """Files of this set that cannot be read: stop with all their names, or, with
        `skip_bad`, note them in `skipped` (the caller leaves them out)."""
        if bad and not self.skip_bad:
            raise AuditInputError(bad_files_message(self.role, bad, total))
        self.skipped.update(bad)

    def check_not_empty(self, total: int) -> None:
        """With every image skipped, nothing is left to audit: stop."""
        if not self.paths:
            raise AuditInputError(bad_files_message(self.role, self.skipped, total, True))

    def drop_skipped(self) -> list[int]:
        """Remove the skipped images from the set; returns the positions kept."""
        keep = [i for i, p in enumerate(self.paths) if p not in self.skipped]
        self.paths = [self.paths[i] for i in keep]
        self.hashes = [self.hashes[i] for i in keep]
        return keep

    @property
    def ids(self) -> list[str]:
        """Paths relative to the folder: how the report names an image."""
        return [p.relative_to(self.folder).as_posix() for p in self.paths]

    def manifest_sha256(self) -> str:
        """One hash of all the images' contents, tying a report to its exact data."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()


def bad_files_message(
    role: str, bad: dict[Path, str], total: int, nothing_left: bool = False
) -> str:
    """One message naming every unreadable file (the first 20) and the fix."""
    listed = sorted(bad.items(), key=lambda item: str(item[0]))
    shown = "\n  ".join(f"{path}: {why}" for path, why in listed[:SHOWN_BAD_FILES])
    more = f"\n  ... and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
    if nothing_left:
        fix = "none is left to audit; check that this is the right folder"
    else:
        fix = (
            "remove or replace them, or leave them out with --skip-bad-images "
            "(pytest: --gan-audit-skip-bad-images)"
        )
    return f"{len(bad)} of {total} {role} images could not be read; {fix}:\n  {shown}{more}"


def find_images(folder: Path, role: str) -> list[Path]:
    """All image files under `folder`, recursively (links followed, each real folder once)."""
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
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop, or a second link to a folder already searched
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()  # a stable walk, so which link to a folder counts does not vary
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
    """The file's content hash, read in chunks; OSError when it is no readable file."""
    if not path.is_file():  # never open a pipe or a device: reading it could block forever
        if path.is_symlink():
            raise OSError("a broken link or a link loop")
        raise OSError("not a regular file (a pipe, a socket or a device)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _try_sha256(path: Path) -> str | OSError:
    try:
        return _sha256(path)
    except OSError as exc:
        return exc


def load_image_set(folder: Path, role: str, skip_bad: bool = False) -> ImageSet:
    """Find the images of one role and hash their contents (hashing reads in threads).

    Files that cannot be read stop the audit with a list of them, or with `skip_bad`
    are left out and listed in the set's `skipped`.
    """
    paths = find_images(folder, role)
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashed = list(pool.map(_try_sha256, paths))
    bad = {
        p: f"cannot read it ({h.strerror or h})"
        for p, h in zip(paths, hashed, strict=True)
        if not isinstance(h, str)
    }
    good = [i for i, h in enumerate(hashed) if isinstance(h, str)]
    order = sorted(good, key=lambda i: (hashed[i], str(paths[i])))
    images = ImageSet(
        role=role,
        folder=Path(folder),
        paths=[paths[i] for i in order],
        hashes=[hashed[i] for i in order],
        skip_bad=skip_bad,
    )
    images.report_bad(bad, len(paths))
    images.check_not_empty(len(paths))
    return images


def decode_image(source: bytes | Path, size: int, channels: int) -> torch.Tensor:
    """An image file (its bytes or its path) -> float tensor (channels, size, size) in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535, float images are min-max
    scaled. Colour is reduced to grey for one channel; grey is repeated for three.
    A path is read lazily: a huge file that is no image is refused from its header.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as img:
            if min(img.size) < 2:
                raise ValueError(f"{img.size[0]}x{img.size[1]} pixels is too small to compare")
            if img.format == "JPEG":  # decode big JPEGs at a reduced scale
                img.draft("L" if channels == 1 else "RGB", (size, size))
            pixels = _to_array(img, channels, size)
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


def _to_array(img: Image.Image, channels: int, size: int) -> np.ndarray:
    if img.mode in ("P", "PA"):  # palette indices cannot be averaged: colours first
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    img = _box_reduce(img, size)
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if mode == "I" and arr.min() >= 0 and arr.max() <= 65535:
            return arr / 65535.0
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    return np.asarray(img, dtype=np.float32) / 255.0


def _box_reduce(img: Image.Image, size: int) -> Image.Image:
    """Average blocks of pixels in the image's own mode until it is at most about twice
    the target size: a huge image is never copied as floats at full size. The final,
    antialiased resize then sees twice its output's resolution."""
    factors = (max(1, img.size[0] // (2 * size)), max(1, img.size[1] // (2 * size)))
    if factors == (1, 1):
        return img
    if img.mode.startswith("I;16") or img.mode == "1":  # modes that reduce() cannot average
        img = img.convert("I" if img.mode != "1" else "L")
    return img.reduce(factors)


class _DecodeDataset(Dataset):
    """Decodes one image per index; a bad file becomes an error string, not a crash."""

    def __init__(self, paths: list[Path], size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return decode_image(path, self.size, self.channels), index, ""
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
    only: list[int] | None = None,
) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Yield (pixels, indices) batches of decoded images, in the set's (hash) order;
    `only` decodes just the images at those positions (e.g. those not cached).

    After the pass (so that one run reports all of them), the files that could not be
    decoded are reported by `ImageSet.report_bad`: an AuditInputError listing them, or,
    with `skip_bad`, an entry in `images.skipped` each.
    """
    workers = default_workers() if workers is None else workers
    positions = list(range(len(images))) if only is None else only
    loader = DataLoader(
        _DecodeDataset([images.paths[i] for i in positions], size, channels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers if positions else 0,
        persistent_workers=False,
    )
    bad: dict[Path, str] = {}
    for pixels, indices, errors in _guarded(loader, images.role):
        where = [positions[int(i)] for i in indices]
        keep = [j for j, err in enumerate(errors) if not err]
        bad.update((images.paths[where[j]], err) for j, err in enumerate(errors) if err)
        if keep:
            yield pixels[keep], [where[j] for j in keep]
    images.report_bad(bad, len(images))


def load_pixels(
    images: ImageSet, size: int, batch_size: int = 64, workers: int | None = None
) -> torch.Tensor:
    """All images of a (small) set as one (N, 1, size, size) grey tensor, in set order."""
    out = torch.zeros(len(images), 1, size, size)
    for pixels, indices in iter_batches(images, size, 1, batch_size, workers):
        out[indices] = pixels
    return out


def _guarded(loader: DataLoader, role: str) -> Iterator:
    """The loader's batches; a decoding process that dies (the kernel's out-of-memory
    killer, a crash in a decoder) becomes a message, not a traceback from torch."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as exc:
            if "DataLoader worker" not in str(exc):
                raise
            raise AuditInputError(
                f"a process decoding the {role} images died ({str(exc).splitlines()[0]}); "
                "an image may need more memory than is free. Run with --workers 0 to find "
                "which file, or free memory"
            ) from None
        yield batch
