"""Streaming an image set through an encoder, with the feature cache.

Images are decoded in batches (images.iter_batches), encoded on the device and
L2-normalised; with a cache, the features of images seen before are read back by
pack instead (see `feature_packs`), and only the others are decoded. The generated
side streams (`FeatureStream`): its features are never all in memory.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from . import __version__
from .cache import TensorCache, cache_key
from .distributed import World, gather_to_all, pack_shares
from .encoders import Encoder
from .images import ImageSet, iter_batches
from .runtime import Progress, device_identity, no_progress


@dataclass(frozen=True)
class Encoding:
    """How images become features: on which device, in batches of what size, decoded
    by how many processes (None: the spare CPU cores), with what progress lines and
    what cache (None: none)."""

    device: torch.device
    batch_size: int = 64
    workers: int | None = None
    progress: Progress = no_progress
    cache: TensorCache | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))


# Part of every feature cache key: bump it when decoding (images.py) or an encoder
# changes the numbers it gives, so that features cached before are not reused.
FEATURES_VERSION = 1
PACK_PREFIX = 2  # hex digits of the content hash shared by the images of a cache pack


def feature_packs(
    images: ImageSet, encoder: Encoder, device: torch.device
) -> list[tuple[str, list[int]]] | None:
    """The feature cache's packs of a set: (key, positions) each, or None when the
    encoder has no identity.

    A pack holds the images whose file's content key (`ImageSet.file_keys`: the image's
    own hash, or its DICOM or NIfTI file's) starts with the same PACK_PREFIX hex digits,
    so packs follow from the contents alone, and a pack is a run of the set's order (the
    set is ordered by those keys; every image of a volume falls in its file's pack): an
    unchanged set reads at most 256 entries, and an added or changed image re-encodes
    only its own pack (about 1/256 of the set). One entry per image costs a file per
    image: re-running a 20,000-image audit from such a cache took 49 s, against 26 s
    with no cache (benchmarks/memory.py). One entry per set would re-encode the whole
    set for any change.

    A key covers the pack's image hashes, the encoder, the device kind (bf16 on a GPU
    gives other numbers than float32 on a CPU) and the versions that change numbers.
    """
    identity = encoder.cache_identity()
    if identity is None:
        return None
    base = cache_key(
        "features",
        FEATURES_VERSION,
        identity,
        *device_identity(device),
        __version__,
        torch.__version__,
    )
    packs: dict[str, list[int]] = {}
    for i, key in enumerate(images.file_keys):
        packs.setdefault(key[:PACK_PREFIX], []).append(i)
    if images.orientation:  # turned images have other features (key unchanged otherwise)
        base = cache_key(base, "orientation", images.orientation)
    return [(cache_key(base, [images.hashes[i] for i in p]), p) for p in packs.values()]


class FeatureStream:
    """An image set's features (L2-normalised float32 rows, on the CPU) as they come, in
    the set's order: the attacks read the generated side block by block (similarity.Rows)
    instead of holding every image's features, so memory does not grow with the set.

    Each pass (`blocks`) reads the cached packs and decodes and encodes the others in
    one stream of batches (the batches of a run without cache), storing each pack as it
    completes. Packs are runs of consecutive images: the set is in file-key order and a
    pack is a key prefix. `seconds` adds up the time spent producing rows (decoding,
    encoding, reading the cache), to tell it from the time the consumer spends.

    After a pass, images that could not be decoded are dropped from the set (with
    `images.skip_bad`; listed in `images.skipped`), so the rows a pass gave match
    `images`; without skip_bad they stop the audit at the end of the pass.
    """

    def __init__(self, images: ImageSet, encoder: Encoder, encoding: Encoding):
        self.images, self.encoder, self.encoding = images, encoder, encoding
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.images)

    def blocks(self, rows: int) -> Iterator[torch.Tensor]:
        """The features, `rows` at a time (the last block may be shorter)."""
        total = len(self.images)
        chunks = self._chunks()
        buffer: list[torch.Tensor] = []
        held = 0
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            self.seconds += time.perf_counter() - started
            if chunk is not None:
                buffer.append(chunk)
                held += len(chunk)
            while held >= rows or (chunk is None and held):
                whole = torch.cat(buffer) if len(buffer) > 1 else buffer[0]
                yield whole[:rows]
                rest = whole[rows:]
                buffer, held = ([rest] if len(rest) else []), len(rest)
            if chunk is None:
                break
        if any(p in self.images.skipped for p in self.images.paths):
            self.images.drop_skipped()
            self.images.check_not_empty(total)

    @torch.inference_mode()
    def _encoded(self, batches) -> Iterator[tuple[list[int], torch.Tensor]]:
        device = self.encoding.device
        for pixels, indices in batches:
            rows = self.encoder.encode_batch(pixels.to(device, non_blocking=True))
            yield indices, F.normalize(rows.float(), dim=1).cpu()

    def _batches(self, only: list[int] | None) -> Iterator[tuple[list[int], torch.Tensor]]:
        images, encoder, encoding = self.images, self.encoder, self.encoding
        batches = iter_batches(
            images,
            encoder.image_size,
            encoder.channels,
            encoding.batch_size,
            encoding.workers,
            only=only,
        )
        return self._encoded(batches)

    def _chunks(self) -> Iterator[torch.Tensor]:
        """Rows in set order, a cached pack or a part of a batch at a time."""
        images, cache, progress = self.images, self.encoding.cache, self.encoding.progress
        self.encoder.to(self.encoding.device)
        total = len(images)
        stage = f"encoding {images.role}"
        progress(stage, 0, total)
        packs = None if cache is None else feature_packs(images, self.encoder, self.encoding.device)
        if cache is None or packs is None:
            done = 0
            for indices, rows in self._batches(None):
                done += len(indices)
                progress(stage, done, total)
                yield rows
            return
        packs.sort(key=lambda pack: pack[1][0])
        stored = [cache.exists("features", key) for key, _ in packs]
        misses = [
            p
            for (_, positions), hit in zip(packs, stored, strict=True)
            if not hit
            for p in positions
        ]
        pending = _Pending(self._batches(misses) if misses else iter(()))
        done = 0
        for (key, positions), hit in zip(packs, stored, strict=True):
            assert positions == list(range(positions[0], positions[-1] + 1)), "a pack is a run"
            rows = (cache.get("features", key) or {}).get("features") if hit else None
            if hit and rows is not None and rows.shape[0] == len(positions):
                pass
            elif hit:  # stored but unsound (the checksum failed): encode this pack alone
                indices, rows = _joined(self._batches(positions))
                if indices == positions:
                    cache.put("features", key, {"features": rows})
            else:
                cache.get("features", key)  # counted as a miss
                indices, rows = pending.until(positions[-1])
                if indices == positions:  # every image decoded
                    cache.put("features", key, {"features": rows})
            done += len(positions)
            progress(stage, done, total)
            if len(rows):
                yield rows
        pending.finish()


class _Pending:
    """Encoded batches of missed images, handed out pack by pack (a batch may straddle
    two packs)."""

    def __init__(self, batches: Iterator[tuple[list[int], torch.Tensor]]):
        self.batches = batches
        self.indices: list[int] = []
        self.rows: torch.Tensor | None = None

    def until(self, last: int) -> tuple[list[int], torch.Tensor]:
        """The rows of missed images at positions up to `last` not handed out yet."""
        parts_i: list[int] = []
        parts_r: list[torch.Tensor] = []
        while True:
            if self.rows is None:
                batch = next(self.batches, None)
                if batch is None:
                    break
                self.indices, self.rows = batch
            n = bisect.bisect_right(self.indices, last)
            parts_i += self.indices[:n]
            parts_r.append(self.rows[:n])
            if n < len(self.indices):
                self.indices, self.rows = self.indices[n:], self.rows[n:]
                break
            self.rows = None
        rows = torch.cat(parts_r) if parts_r else torch.zeros(0, 0)
        return parts_i, rows

    def finish(self) -> None:
        """Run the decoding pass to its end, where unreadable files are reported."""
        for _ in self.batches:
            raise AssertionError("every missed image was handed out")


def _joined(batches) -> tuple[list[int], torch.Tensor]:
    indices, rows = [], []
    for i, r in batches:
        indices += i
        rows.append(r)
    return indices, torch.cat(rows) if rows else torch.zeros(0, 0)


def shared_features(
    world: World, images: ImageSet, encoder: Encoder, encoding: Encoding
) -> torch.Tensor | None:
    """Under torchrun: each rank decodes and encodes its share of the set (whole cache
    packs, distributed.pack_shares) and rank 0 gets all the rows, in the set's order
    (None on the other ranks). Images a rank could not decode (skip_bad) are dropped
    from rank 0's set too, so rows still match `images`."""
    share = pack_shares(images.file_keys, PACK_PREFIX, world.size)[world.rank]
    mine = images.subset(list(share))
    rows = encode_images(mine, encoder, encoding) if len(mine) else None
    parts = gather_to_all(world, (rows, dict(mine.skipped)))
    if not world.main:
        return None
    total = len(images)
    for _, skipped in parts:
        images.skipped.update(skipped)
    if any(p in images.skipped for p in images.paths):
        images.drop_skipped()
        images.check_not_empty(total)
    return torch.cat([r for r, _ in parts if r is not None and len(r)])


def encode_images(images: ImageSet, encoder: Encoder, encoding: Encoding) -> torch.Tensor:
    """Encode every image of the set: (N, D) float32, L2-normalised, on the CPU, in
    memory (for the candidates and the reference; the generated side streams,
    `FeatureStream`).

    With a cache, features of images seen before are read from it and only the others
    are decoded and encoded (in batches), then stored. With `images.skip_bad`, images
    that cannot be decoded are dropped from the set (listed in `images.skipped`), so
    rows still match `images`.
    """
    stream = FeatureStream(images, encoder, encoding)
    parts = list(stream.blocks(max(1, len(images))))
    return parts[0] if parts else torch.zeros(0, 0)
