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

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from .errors import AuditInputError, printable
from .medical import (
    NIFTI_SUFFIXES,
    DecodeOptions,
    FrameRef,
    ImageGroups,
    MedicalFile,
    NotAnImage,
    UnreadableImage,
    Window,
    forget_open_files,
    medical_format,
    read_image,
    read_medical_file,
)
from .orientation import orient
from .runtime import cpu_budget

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
RASTER = "raster"  # a PNG, JPEG, BMP or TIFF file: one image, decoded by Pillow

# Decompression-bomb guard: PIL refuses images over twice this many pixels and
# warns above it; we turn the warning into a refusal too (a bad file, not a crash).
# Below it, a large image costs its native size once while decoding (at most 1 GiB,
# RGBA), then is box-reduced before any float copy is made.
MAX_IMAGE_PIXELS = 16_384 * 16_384
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
SHOWN_BAD_FILES = 20


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
    # what was left out as no image to audit, by kind: DICOM objects such as "SR",
    # "RTSTRUCT", "SEG", "DICOMDIR", and "blank" images (all pixels equal)
    non_images: dict[str, int] = field(default_factory=dict)
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
            left_out = ", ".join(f"{n} {kind}" for kind, n in sorted(self.non_images.items()))
            raise AuditInputError(
                f"the {self.role} folder {self.folder} has no image to audit: its DICOM or "
                f"NIfTI files hold only objects that are not images or blank images "
                f"({left_out}); check that this is the right folder"
            )
        raise AuditInputError(bad_files_message(self.role, self.skipped, total, True))

    def subset(self, positions: list[int]) -> ImageSet:
        """The images at these positions, as a set of its own (same role and folder)."""
        return replace(
            self,
            paths=[self.paths[i] for i in positions],
            hashes=[self.hashes[i] for i in positions],
            sources=[self.sources[i] for i in positions],
            groups=[self.groups[i] for i in positions],
            file_keys=[self.file_keys[i] for i in positions],
            skipped={},
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
    name = path.relative_to(folder).as_posix()
    if isinstance(source, FrameRef) and source.images_in_file > 1:
        name = f"{name}#{source.index}"
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
    path: Path, fmt: str, options: DecodeOptions
) -> str | MedicalFile | OSError | UnreadableImage:
    """One file's images and hashes: the SHA-256 of its bytes (RASTER), a MedicalFile,
    or the error that says why it cannot be read. A missing DICOM decoder stops the
    audit (raised)."""
    if fmt == RASTER:
        return _try_sha256(path)
    try:
        _check_regular(path)
        return read_medical_file(path, fmt, options)
    except OSError as exc:
        return exc
    except NotAnImage as exc:
        return MedicalFile([], "", non_image=exc.kind)
    except UnreadableImage as exc:
        return exc


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
    hashes are kept. `groups` (medical.read_groups_file) gives images their patient;
    pass it for the real images, not the generated ones: every image without a group
    of its own must then be listed.
    """
    options = options or DecodeOptions()
    files = find_image_files(folder, role)
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda f: _load_file(f[0], f[1], options), files))
    bad: dict[Path, str] = {}
    non_images: dict[str, int] = {}
    rows = []  # (order key, path, source, hash, group), one per image
    for (path, _), result in zip(files, loaded, strict=True):
        if isinstance(result, OSError):
            bad[path] = f"cannot read it ({result.strerror or result})"
        elif isinstance(result, UnreadableImage):
            bad[path] = str(result)
        elif isinstance(result, str):  # a plain image: the SHA-256 of its bytes
            rows.append(((result, -1, str(path)), path, path, result, None))
        else:
            for kind, n in result.left_out().items():
                non_images[kind] = non_images.get(kind, 0) + n
            key = _file_key([h for _, h in result.images])
            for ref, digest in result.images:
                rows.append(((key, ref.index, str(path)), path, ref, digest, result.group))
    rows.sort(key=lambda row: row[0])
    # one image per content: a copy is left out and named (ImageSet.duplicates)
    kept: dict[str, tuple] = {}
    duplicates = []
    for row in rows:
        first = kept.setdefault(row[3], row)
        if first is not row:
            duplicates.append(
                (image_id(Path(folder), row[1], row[2]), image_id(Path(folder), first[1], first[2]))
            )
    rows = list(kept.values())  # dicts keep the (content) order they were filled in
    images = ImageSet(
        role=role,
        folder=Path(folder),
        paths=[row[1] for row in rows],
        hashes=[row[3] for row in rows],
        skip_bad=skip_bad,
        sources=[row[2] for row in rows],
        groups=[row[4] for row in rows],
        file_keys=[row[0][0] for row in rows],
        non_images=dict(sorted(non_images.items())),
        duplicates=duplicates,
    )
    images.report_bad(bad, len(files))
    images.check_not_empty(len(files))
    if groups is not None:
        assign_groups(images, groups, {path for path, _ in files})
    return images


def _file_key(hashes: list[str]) -> str:
    """Where a medical file's images go in the set's order: by its content (its one
    image's hash, or a hash of all), never by its name."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def assign_groups(images: ImageSet, groups: ImageGroups, found: set[Path]) -> None:
    """Give the images the groups a groups file lists (over their own), and stop when
    the file and the folder disagree: a listed file of this folder that is not there
    (a typo, a stale list), or an image with no group at all (it would count as a
    patient of its own, unnoticed)."""
    real = {path.resolve() for path in found}
    missing = sorted(p for p in groups.listed_under(images.folder) if p not in real)
    base = groups.source.parent
    if missing:
        shown = "\n  ".join(printable(os.path.relpath(p, base)) for p in missing[:SHOWN_BAD_FILES])
        raise AuditInputError(
            f"the groups file {groups.source} lists {len(missing)} file(s) in the "
            f"{images.role} folder {images.folder} that are not there; fix their paths "
            f"(relative to {groups.source.parent}) or remove those lines:\n  {shown}"
        )
    for i, path in enumerate(images.paths):
        images.groups[i] = groups.group_of(path) or images.groups[i]
    unlisted = sorted({p for p, g in zip(images.paths, images.groups, strict=True) if g is None})
    if unlisted:
        shown = "\n  ".join(printable(os.path.relpath(p, base)) for p in unlisted[:SHOWN_BAD_FILES])
        raise AuditInputError(
            f"{len(unlisted)} {images.role} images are not in the groups file "
            f"{groups.source} and have no patient of their own: add a line "
            f"'path,group' for each (paths relative to {base}), e.g.:\n  {shown}"
        )


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
        return f"too large (over {MAX_IMAGE_PIXELS:,} pixels); down-sample it first"
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
