"""Finding, hashing and decoding images.

Images are found recursively, identified by their content and kept in content order,
so that no result depends on file names or on the order of a listing. Pixels are
decoded in batches by a torch DataLoader (parallel workers), brought to the encoder's
size and channels, and never all held in memory at full size.

An item of a set is one image. A PNG, JPEG, BMP or TIFF file is one image, identified
by the SHA-256 of its bytes. A DICOM file (recognised by content, any name) or a NIfTI
volume may hold many (frames, slices: see medical.py); each is identified by the
SHA-256 of its decoded pixels, so the same slice stored with another transfer syntax
is the same image. The images of one file stay neighbours in the set's order (files
ordered by content, then frame or slice), so that a decoding worker reads a volume
once per pass instead of once per slice.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from .errors import AuditInputError, UnreadableImage, printable
from .groups import ImageGroups
from .medical import (
    BLANK,
    DecodeOptions,
    FrameRef,
    MedicalFile,
    PixelBudget,
    forget_open_files,
    medical_format,
    read_image,
    read_medical_file,
)
from .nifti import NIFTI_SUFFIXES
from .orientation import orient
from .runtime import cpu_budget, return_freed_memory
from .settings import MAX_PIXELS
from .windowing import Window

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
RASTER = "raster"  # a PNG, JPEG, BMP or TIFF file: one image, decoded by Pillow

# Decompression-bomb guard: PIL refuses images over twice this many pixels and
# warns above it; we turn the warning into a refusal too (a bad file, not a crash).
# Below it, a large image costs its native size once while decoding (at most 1 GiB,
# RGBA), then is box-reduced before any float copy is made.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
SHOWN_BAD_FILES = 20


# why an image was left out of a set (ImageSet.every_left_out)
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not an image"
COPY = "copy"


@dataclass(frozen=True, order=True)
class LeftOut:
    """An image found and left out of a set: its id (its path in the folder, "#index"
    for a frame or slice), why (UNREADABLE, NOT_AN_IMAGE, medical.BLANK or COPY) and
    the detail (the reader's reason, the object's kind, or the id of the image kept)."""

    image: str
    why: str
    detail: str = ""


@dataclass
class ImageSet:
    """Images of one role (generated, used, not_used), in content order.

    `paths`, `hashes`, `sources` and `groups` are aligned, one entry per image: its
    file, its content hash, what `decode_image` reads (the path of a PNG/JPEG/BMP/TIFF
    file, a medical.FrameRef for a frame or slice of a DICOM or NIfTI file) and its
    group (the patient: DICOM PatientID, else study, series or file; the NIfTI volume;
    a groups file's line; None for a plain image without one).
    """

    role: str
    folder: Path
    paths: list[Path]
    hashes: list[str]
    # leave unreadable files out (listed in `skipped`, path -> reason) instead of stopping
    skip_bad: bool = False
    skipped: dict[Path, str] = field(default_factory=dict)
    sources: list[Path | FrameRef] = field(default_factory=list)  # default: the paths
    groups: list[str | None] = field(default_factory=list)  # default: None each
    # what was found and left out as no image to audit: DICOM objects such as SR,
    # RTSTRUCT, SEG or DICOMDIR, and blank images (all pixels equal)
    left_out: list[LeftOut] = field(default_factory=list)
    # images left out because another image of the set has the same content (a file
    # copied twice): (its id, the id of the image kept). Counted once, they would
    # otherwise weigh twice in every number and pair up as "two distinct candidates"
    # that are identical, which blinds the near-copy threshold.
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    # how every decoded image is turned (orientation.ORIENTATIONS; 0: as stored): the
    # orientation check's choice for the candidates
    orientation: int = 0
    # the content key of each image's file, which orders the set: the image's own hash
    # for a one-image file, a hash of all its images' hashes for a DICOM or NIfTI file
    # of several. The images of one file share it, so a group of keys (a cache pack,
    # features.feature_packs) is a run of the set's order.
    file_keys: list[str] = field(default_factory=list)  # default: the hashes

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = list(self.paths)
        if not self.groups:
            self.groups = [None] * len(self.paths)
        if not self.file_keys:
            self.file_keys = list(self.hashes)

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
        if self.paths:
            return
        if not self.skipped:  # only DICOM objects that are no images, or blank ones
            left_out = ", ".join(f"{n} {why}" for why, n in self.left_out_counts().items())
            raise AuditInputError(
                f"the {self.role} folder {self.folder} has no image to audit: its DICOM or "
                f"NIfTI files hold only objects that are not images or blank images "
                f"({left_out}); check that this is the right folder"
            )
        raise AuditInputError(bad_files_message(self.role, self.skipped, total, True))

    def left_out_counts(self) -> dict[str, int]:
        """Images left out of this set, by why (`every_left_out`); objects that are not
        images by their kind ("SR", "DICOMDIR"...)."""
        counts: dict[str, int] = {}
        for item in self.every_left_out():
            key = item.detail if item.why == NOT_AN_IMAGE else item.why
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def every_left_out(self) -> list[LeftOut]:
        """Every image found and left out, for any reason, named: unreadable files
        (skipped), objects that are not images, blank images, and copies of an image of
        the set (counted once)."""
        folder = self.folder
        unreadable = [
            LeftOut(_relative(folder, path), UNREADABLE, reason)
            for path, reason in sorted(self.skipped.items(), key=lambda item: str(item[0]))
        ]
        copies = [LeftOut(copy, COPY, kept) for copy, kept in self.duplicates]
        return unreadable + sorted(self.left_out) + copies

    def subset(self, positions: list[int]) -> ImageSet:
        """The images at these positions, as a set of its own (same role and folder)."""
        return replace(
            self,
            paths=[self.paths[i] for i in positions],
            hashes=[self.hashes[i] for i in positions],
            sources=[self.sources[i] for i in positions],
            groups=[self.groups[i] for i in positions],
            file_keys=[self.file_keys[i] for i in positions],
            skipped=dict(self.skipped),  # still to be named
        )

    def drop_skipped(self) -> list[int]:
        """Remove the images of skipped files from the set; returns the positions kept."""
        keep = [i for i, p in enumerate(self.paths) if p not in self.skipped]
        self.paths = [self.paths[i] for i in keep]
        self.hashes = [self.hashes[i] for i in keep]
        self.sources = [self.sources[i] for i in keep]
        self.groups = [self.groups[i] for i in keep]
        self.file_keys = [self.file_keys[i] for i in keep]
        return keep

    @property
    def ids(self) -> list[str]:
        """Paths relative to the folder, with "#frame" or "#slice" (the frame of a DICOM
        file, the canonical slice index of a NIfTI volume) where a file holds several:
        how the report names an image."""
        return [
            image_id(self.folder, path, source)
            for path, source in zip(self.paths, self.sources, strict=True)
        ]

    @property
    def frames(self) -> list[int | None]:
        """The frame or slice of each image inside its file (None: a one-image file)."""
        return [
            s.index if isinstance(s, FrameRef) and s.images_in_file > 1 else None
            for s in self.sources
        ]

    @property
    def windows(self) -> list[Window | None]:
        """How each medical image's values were mapped to grey (None: a plain image)."""
        return [s.window if isinstance(s, FrameRef) else None for s in self.sources]

    def windowing(self) -> dict[str, int]:
        """How many images were windowed how: "user", "header", "voi_lut",
        "percentile", "colour" (medical images only), for the report."""
        counts: dict[str, int] = {}
        for window in self.windows:
            if window is not None:
                counts[window.source] = counts.get(window.source, 0) + 1
        return dict(sorted(counts.items()))

    def manifest_sha256(self) -> str:
        """One hash of all the images' contents, tying a report to its exact data."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()


def image_id(folder: Path, path: Path, source: Path | FrameRef) -> str:
    """How the report names an image: its path relative to its folder, with "#frame" or
    "#slice" where its file holds several."""
    name = _relative(folder, path)
    if isinstance(source, FrameRef):
        return _frame_id(name, source.index, source.images_in_file)
    return name


def bad_files_message(
    role: str, bad: dict[Path, str], total: int, nothing_left: bool = False
) -> str:
    """One message naming every unreadable file (the first 20) and the fix."""
    listed = sorted(bad.items(), key=lambda item: str(item[0]))
    shown = "\n  ".join(f"{printable(path)}: {why}" for path, why in listed[:SHOWN_BAD_FILES])
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
    return [path for path, _ in find_image_files(folder, role)]


def find_image_files(folder: Path, role: str) -> list[tuple[Path, str]]:
    """(path, format) of every image file under `folder`: RASTER by suffix, NIfTI by
    suffix, DICOM by suffix or by content (the other files are read to look)."""
    folder = Path(folder)
    if not folder.exists():
        flag = role.replace("_", "-")
        raise AuditInputError(
            f"the {role} folder {folder} does not exist: check the path given with --{flag} "
            f"(command line) or --gan-audit-{flag} / gan_audit_{role} (pytest)"
        )
    if not folder.is_dir():
        raise AuditInputError(f"the {role} path {folder} is not a folder: give a folder of images")
    found: list[tuple[Path, str]] = []
    unknown: list[Path] = []
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
                found.append((path, RASTER))
            else:
                unknown.append(path)
    with ThreadPoolExecutor(max_workers=8) as pool:  # DICOM files often have no suffix
        formats = list(pool.map(medical_format, unknown))
    found += [(p, f) for p, f in zip(unknown, formats, strict=True) if f is not None]
    others = sum(f is None for f in formats)
    if not found:
        what = f"only {others} non-image files" if others else "no files"
        kinds = ", ".join(sorted(IMAGE_SUFFIXES) + list(NIFTI_SUFFIXES))
        raise AuditInputError(
            f"the {role} folder {folder} has {what}; it needs images ({kinds}, or DICOM "
            "files, recognised by content), searched recursively"
        )
    return found


def _check_regular(path: Path) -> None:
    """OSError unless `path` is a regular file: never open a pipe or a device, reading
    it could block forever."""
    if not path.is_file():
        if path.is_symlink():
            raise OSError("a broken link or a link loop")
        raise OSError("not a regular file (a pipe, a socket or a device)")


def _sha256(path: Path) -> str:
    """The file's content hash, read in chunks; OSError when it is no readable file."""
    _check_regular(path)
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


def _load_file(
    path: Path, fmt: str, options: DecodeOptions, budget: PixelBudget
) -> str | MedicalFile | OSError | UnreadableImage:
    """One file's images and hashes: the SHA-256 of its bytes (RASTER), a MedicalFile,
    or the error that says why it cannot be read. A missing DICOM decoder stops the
    audit (raised)."""
    if fmt == RASTER:
        return _try_sha256(path)
    try:
        _check_regular(path)
        return read_medical_file(path, fmt, options, budget)
    except OSError as exc:
        return exc
    except UnreadableImage as exc:
        return exc


def _relative(folder: Path, path: Path) -> str:
    return path.relative_to(folder).as_posix()


def _frame_id(name: str, index: int, images_in_file: int) -> str:
    return f"{name}#{index}" if images_in_file > 1 else name


def load_image_set(
    folder: Path,
    role: str,
    skip_bad: bool = False,
    options: DecodeOptions | None = None,
    groups: ImageGroups | None = None,
) -> ImageSet:
    """Find the images of one role and hash their contents (reading in threads).

    Files that cannot be read stop the audit with a list of them, or with `skip_bad`
    are left out and listed in the set's `skipped`. DICOM and NIfTI files are decoded
    here, as `options` say (medical.DecodeOptions), to hash their pixels; only the
    hashes are kept, and at most `options.max_pixels` pixels are decoded at once.
    `groups` (groups.read_groups_file) gives images their patient; pass it for the real
    images, not the generated ones: every image without a group of its own must then be
    listed.
    """
    options = options or DecodeOptions()
    folder = Path(folder)
    files = find_image_files(folder, role)
    budget = PixelBudget(options.max_pixels)
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda f: _load_file(f[0], f[1], options, budget), files))
    rows, bad, left_out = _rows_of(folder, files, loaded)
    rows, duplicates = _one_per_content(folder, rows)
    images = ImageSet(
        role=role,
        folder=folder,
        paths=[row.path for row in rows],
        hashes=[row.digest for row in rows],
        skip_bad=skip_bad,
        sources=[row.source for row in rows],
        groups=[row.group for row in rows],
        file_keys=[row.order[0] for row in rows],
        left_out=left_out,
        duplicates=duplicates,
    )
    images.report_bad(bad, len(files))
    images.check_not_empty(len(files))
    _check_ids_unique(images)
    if groups is not None:
        groups.assign(role, folder, images.paths, images.groups, [path for path, _ in files])
    return images


class _Row(NamedTuple):
    """One image found: where it goes in the set's order (its file's content key, its
    index in the file, the path for ties), its file, what decodes it, its hash, group."""

    order: tuple[str, int, str]
    path: Path
    source: Path | FrameRef
    digest: str
    group: str | None


def _rows_of(
    folder: Path, files: list[tuple[Path, str]], loaded: list
) -> tuple[list[_Row], dict[Path, str], list[LeftOut]]:
    """The images of the files read, in content order; the files that cannot be read
    (path -> why); what they hold that is no image to audit."""
    bad: dict[Path, str] = {}
    left_out: list[LeftOut] = []
    rows: list[_Row] = []
    for (path, _), result in zip(files, loaded, strict=True):
        if isinstance(result, OSError):
            bad[path] = f"cannot read it ({result.strerror or result})"
        elif isinstance(result, UnreadableImage):
            bad[path] = str(result)
        elif isinstance(result, str):  # a plain image: the SHA-256 of its bytes
            rows.append(_Row((result, -1, str(path)), path, path, result, None))
        else:
            name = _relative(folder, path)
            if result.non_image is not None:
                left_out.append(LeftOut(name, NOT_AN_IMAGE, result.non_image))
            for index in result.blank:
                left_out.append(LeftOut(_frame_id(name, index, result.images_in_file), BLANK))
            key = _file_key([h for _, h in result.images])
            for ref, digest in result.images:
                rows.append(_Row((key, ref.index, str(path)), path, ref, digest, result.group))
    rows.sort(key=lambda row: row.order)
    return rows, bad, left_out


def _one_per_content(folder: Path, rows: list[_Row]) -> tuple[list[_Row], list[tuple[str, str]]]:
    """One image per content: a copy is left out and named (copy id, kept id)."""
    kept: dict[str, _Row] = {}
    duplicates = []
    for row in rows:
        first = kept.setdefault(row.digest, row)
        if first is not row:
            duplicates.append(
                (image_id(folder, row.path, row.source), image_id(folder, first.path, first.source))
            )
    return list(kept.values()), duplicates  # dicts keep the (content) order they were filled


def _check_ids_unique(images: ImageSet) -> None:
    """Every image has a name of its own: a file named like a frame of another
    ("scan#1" beside a multi-frame "scan") would make two images one line of a
    predictions file, and one row of a report."""
    seen: dict[str, int] = {}
    for i, name in enumerate(images.ids):
        if name in seen:
            raise AuditInputError(
                f"two images of the {images.role} folder have the name {printable(name)}: the file "
                f"{printable(images.paths[i])} and an image of "
                f"{printable(images.paths[seen[name]])} (a '#' and a number after a file's "
                "name name a frame or slice of it). Rename the file"
            )
        seen[name] = i


def _file_key(hashes: list[str]) -> str:
    """Where a medical file's images go in the set's order: by its content (its one
    image's hash, or a hash of all), never by its name."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def decode_image(source: bytes | Path | FrameRef, size: int, channels: int) -> torch.Tensor:
    """An image (a file's bytes or path, or a medical.FrameRef: one frame or slice of
    a DICOM or NIfTI file) -> float tensor (channels, size, size) in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535, float images are min-max
    scaled; medical images come windowed from medical.read_image. Colour is reduced
    to grey for one channel; grey is repeated for three. A path is read lazily: a huge
    file that is no image is refused from its header.
    """
    if isinstance(source, FrameRef):
        tensor = _medical_tensor(source, size)
    else:
        pixels = torch.from_numpy(_raster_array(source, size, channels))
        tensor = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return _fit(tensor, size, channels)


def _raster_array(source: bytes | Path, size: int, channels: int) -> np.ndarray:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as img:
            _check_size(*img.size)
            if img.format == "JPEG":  # decode big JPEGs at a reduced scale
                img.draft("L" if channels == 1 else "RGB", (size, size))
            return _to_array(img, channels, size)


def _check_size(width: int, height: int) -> None:
    if min(width, height) < 2:
        raise ValueError(f"{width}x{height} pixels is too small to compare")


def _medical_tensor(ref: FrameRef, size: int) -> torch.Tensor:
    """A medical image as (1, H, W): already float32 in memory, so the antialiased
    resize alone brings it to size."""
    pixels = read_image(ref)
    _check_size(pixels.shape[1], pixels.shape[0])
    return torch.from_numpy(pixels)[None]


def _fit(tensor: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """(C, H, W) pixels -> (channels, size, size)."""
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

    def __init__(
        self, sources: list[Path | FrameRef], size: int, channels: int, orientation: int = 0
    ):
        self.sources, self.size, self.channels = sources, size, channels
        self.orientation = orientation

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int):
        source = self.sources[index]
        try:
            pixels = decode_image(source, self.size, self.channels)
            return orient(pixels, self.orientation), index, ""
        except Exception as exc:  # noqa: BLE001 - every decoding failure is reported by file
            empty = torch.zeros(self.channels, self.size, self.size)
            return empty, index, _describe_decode_error(exc)


def _describe_decode_error(exc: Exception) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large (over {MAX_PIXELS:,} pixels); down-sample it first"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image that Pillow can read (wrong extension, empty or corrupt file)"
    if isinstance(exc, UnreadableImage):
        return str(exc)
    if isinstance(exc, OSError):
        return f"corrupt or truncated image ({exc})"
    return f"cannot be decoded ({exc})"


def default_workers() -> int:
    """Decoding workers: the spare CPUs of this process's share, at most 4 (0 decodes
    in this process). The share (runtime.cpu_budget: affinity, cgroup quota, split
    among pytest-xdist workers), not os.cpu_count(): two xdist workers on 2 cores would
    each start a decoding process beside their own threads."""
    return max(0, min(4, cpu_budget() - 1))


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
    if workers and positions:
        # a worker is a fork of this process and starts with its resident pages: the
        # heap's freed but kept blocks need not be among them
        return_freed_memory()
    loader = DataLoader(
        _DecodeDataset([images.sources[i] for i in positions], size, channels, images.orientation),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers if positions else 0,
        persistent_workers=False,
    )
    bad: dict[Path, str] = {}
    try:
        for pixels, indices, errors in _guarded(loader, images.role):
            where = [positions[int(i)] for i in indices]
            keep = [j for j, err in enumerate(errors) if not err]
            bad.update((images.paths[where[j]], err) for j, err in enumerate(errors) if err)
            if keep:
                yield pixels[keep], [where[j] for j in keep]
    finally:
        forget_open_files()  # the volume a pass without workers kept open
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
