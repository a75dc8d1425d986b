"""Streaming an image set through an encoder, with the feature cache.

Images are decoded in batches (images.iter_batches), encoded on the device and
L2-normalised; with a cache, the features of images seen before are read back by
pack instead (see `feature_packs`), and only the others are decoded.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from . import __version__
from .cache import TensorCache, cache_key
from .encoders import Encoder
from .images import ImageSet, iter_batches
from .runtime import Progress, device_identity, no_progress

# Part of every feature cache key: bump it when decoding (images.py) or an encoder
# changes the numbers it gives, so that features cached before are not reused.
FEATURES_VERSION = 1
PACK_PREFIX = 2  # hex digits of the content hash shared by the images of a cache pack


def feature_packs(
    images: ImageSet, encoder: Encoder, device: torch.device
) -> list[tuple[str, list[int]]] | None:
    """The feature cache's packs of a set: (key, positions) each, or None when the
    encoder has no identity.

    A pack holds the images whose content hash starts with the same PACK_PREFIX hex
    digits, so packs follow from the contents alone: an unchanged set reads at most 256
    entries, and an added or changed image re-encodes only its own pack (about 1/256 of
    the set). One entry per image costs a file per image: re-running a 20,000-image
    audit from such a cache took 49 s, against 26 s with no cache (benchmarks/memory.py).
    One entry per set would re-encode the whole set for any change.

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
    for i, h in enumerate(images.hashes):
        packs.setdefault(h[:PACK_PREFIX], []).append(i)
    if images.orientation:  # turned images have other features (key unchanged otherwise)
        base = cache_key(base, "orientation", images.orientation)
    return [(cache_key(base, [images.hashes[i] for i in p]), p) for p in packs.values()]


@torch.inference_mode()
def encode_images(
    images: ImageSet,
    encoder: Encoder,
    device: torch.device,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress = no_progress,
    cache: TensorCache | None = None,
) -> torch.Tensor:
    """Encode every image of the set: (N, D) float32, L2-normalised, on the CPU.

    With a cache, features of images seen before are read from it and only the others
    are decoded and encoded (in batches), then stored. With `images.skip_bad`, images
    that cannot be decoded are dropped from the set (listed in `images.skipped`), so
    rows still match `images`.
    """
    encoder.to(device)
    total = len(images)
    features: torch.Tensor | None = None

    def place(indices: list[int], rows: torch.Tensor) -> None:
        nonlocal features
        if features is None:  # one (N, D) buffer, allocated when D is known
            features = torch.zeros(total, rows.shape[1])
        features[indices] = rows

    stage = f"encoding {images.role}"
    progress(stage, 0, total)
    packs = None if cache is None else feature_packs(images, encoder, device)
    misses, missed_packs = list(range(total)), []
    if cache is not None and packs is not None:
        misses = []
        for key, positions in packs:
            rows = (cache.get("features", key) or {}).get("features")
            if rows is None or rows.shape[0] != len(positions):
                misses += positions
                missed_packs.append((key, positions))
            else:
                place(positions, rows)
    done = total - len(misses)
    progress(stage, done, total)
    encoded = torch.zeros(total, dtype=torch.bool)
    batches = iter_batches(
        images, encoder.image_size, encoder.channels, batch_size, workers, only=misses
    )
    try:
        for pixels, indices in batches:
            rows = encoder.encode_batch(pixels.to(device, non_blocking=True))
            place(indices, F.normalize(rows.float(), dim=1).cpu())
            encoded[indices] = True
            done += len(indices)
            progress(stage, done, total)
    finally:  # also when a bad image stops the audit: the work done is kept
        for key, positions in missed_packs:
            if cache is not None and features is not None and encoded[positions].all():
                cache.put("features", key, {"features": features[positions]})
    if any(p in images.skipped for p in images.paths):
        kept = images.drop_skipped()
        images.check_not_empty(total)
        assert features is not None
        features = features[kept]
    assert features is not None  # every image was cached, decoded, or reported
    return features
