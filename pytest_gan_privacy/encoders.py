"""Encoders: images -> feature vectors, behind one small interface.

An encoder declares the input it needs (size and channels), may learn from the
generated images first (`fit`, used by the MAE), and maps a batch of pixels to
feature vectors. `encode_images` streams an image set through it; features are
L2-normalised so that a dot product is a cosine similarity.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from . import __version__
from .attacks import AttackScores
from .cache import TensorCache, cache_key, tensors_sha256
from .errors import AuditInputError
from .images import ImageSet, iter_batches, load_pixels

if TYPE_CHECKING:
    from .mae import MAEConfig

Progress = Callable[[str, int, int], None]

# Part of every feature cache key: bump it when decoding (images.py) or an encoder
# changes the numbers it gives, so that features cached before are not reused.
FEATURES_VERSION = 1
PACK_PREFIX = 2  # hex digits of the content hash shared by the images of a cache pack


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class Encoder:
    """The interface every feature extractor implements."""

    name: str = "encoder"
    image_size: int = 64
    channels: int = 1

    def to(self, device: torch.device) -> Encoder:
        """Move any weights to the device (nothing by default)."""
        return self

    def fit(self, generated: ImageSet, device: torch.device, progress: Progress) -> None:
        """Learn from the generated images before encoding (nothing by default)."""

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, channels, size, size) in [0, 1], on the device -> (B, D) features."""
        raise NotImplementedError

    def attacks(self, candidates: list[ImageSet], device: torch.device) -> list[AttackScores]:
        """Attacks of this encoder's own, beside those on its features (none by default)."""
        return []

    def describe(self) -> dict:
        """Settings that identify this encoder (shown in the report)."""
        return {"name": self.name, "image_size": self.image_size, "channels": self.channels}

    def cache_identity(self) -> dict | None:
        """Everything that decides this encoder's features, JSON-ready, for the feature
        cache's keys: settings and, for learned weights, a hash of them. None (the
        default) means its features are never cached: an identity that missed its
        weights would make the cache serve stale features."""
        return None


class FixedEncoder(Encoder):
    """An encoder without learned weights: its settings alone decide its features."""

    def cache_identity(self) -> dict:
        return {"class": type(self).__name__, **self.describe()}


class PixelEncoder(FixedEncoder):
    """Down-sampled pixels, centred per image: the GAN-Leaks style baseline.

    Centring and L2 normalisation make the cosine a Pearson correlation, blind to
    brightness and contrast.
    """

    name = "pixels"

    def __init__(self, image_size: int = 64):
        self.image_size = image_size

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        flat = pixels.flatten(1).float()
        return flat - flat.mean(dim=1, keepdim=True)


# SSIM's stabilising constant: flat windows (background) get almost no weight instead
# of amplifying noise. 30 grey levels squared per pixel, on the [0, 1] scale.
LOCAL_STRUCTURE_C = 30 / 255**2


def local_structure(images: torch.Tensor, window: int = 8) -> torch.Tensor:
    """(N, 1, H, W) -> (N, D): every window x window tile centred and normalised, the
    whole L2-normalised. The dot product of two such vectors is a weighted mean of the
    tiles' Pearson correlations: the structure term of SSIM, in one matrix multiply."""
    tiles = F.unfold(images.float(), kernel_size=window, stride=window)  # (N, w*w, L)
    tiles = tiles - tiles.mean(dim=1, keepdim=True)
    norm = (tiles.square().sum(dim=1, keepdim=True) + LOCAL_STRUCTURE_C * tiles.shape[1]).sqrt()
    return F.normalize((tiles / norm).flatten(1), dim=1)


class PatchEncoder(FixedEncoder):
    """Local structure of 8x8 tiles (see `local_structure`).

    Sees what memorised images share locally and ignores brightness and contrast:
    on brainmri64 `vae-100` it lifts nearest-neighbour AUC from 0.74 (pixels) to 0.94.
    """

    name = "patches"

    def __init__(self, image_size: int = 64, window: int = 8):
        self.image_size, self.window = image_size, window

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return local_structure(pixels, self.window)

    def describe(self) -> dict:
        return {**super().describe(), "window": self.window}


class NearCopyEncoder(FixedEncoder):
    """The generated side of the near-copy detector: local structure of the centre crop
    (nearcopies.py compares it with shifted and rotated crops of the candidates)."""

    name = "near-copy"

    def __init__(self, image_size: int = 64):
        self.image_size = image_size

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        from .nearcopies import generated_side

        return generated_side(pixels)


class TimmViTEncoder(Encoder):
    """A timm Vision Transformer with weights from a local file (never downloaded).

    Works with timm's `vit_base_patch16_224.mae` weights and the official MAE
    checkpoint format; grey images are repeated to three channels and normalised
    with the ImageNet statistics those models were trained with.
    """

    name = "vit"
    channels = 3

    def __init__(
        self,
        model_name: str,
        checkpoint: Path,
        image_size: int | None = None,
        pooling: str = "token",
    ):
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        from .checkpoints import load_state_dict

        try:
            kwargs = {"img_size": image_size} if image_size else {}
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as exc:  # timm's "Unknown model" error
            raise AuditInputError(f"unknown timm model {model_name!r}: {exc}") from None
        state = load_state_dict(checkpoint)
        # the MAE decoder and classifier heads are not part of the encoder
        state = {
            k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token", "head."))
        }
        state = checkpoint_filter_fn(state, self.model)  # resizes position embeddings
        self.weights_sha256 = tensors_sha256(state)
        missing, _unexpected = self.model.load_state_dict(state, strict=False)
        if missing:
            raise AuditInputError(
                f"the checkpoint {checkpoint} does not fit the timm model {model_name!r}: "
                f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])}). "
                "Name the matching model with --vit-model."
            )
        self.model.eval()
        self.model_name = model_name
        self.image_size = self.model.patch_embed.img_size[0]
        self.pooling = pooling
        cfg = self.model.pretrained_cfg or {}
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)

    def to(self, device: torch.device) -> TimmViTEncoder:
        self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        from .mae import autocast

        x = (pixels - self.mean) / self.std
        # bf16 on a GPU, where it doubles matmul throughput; exact float32 on a CPU
        with autocast(pixels.device, pixels.device.type == "cuda"):
            tokens = self.model.forward_features(x)
        prefix = self.model.num_prefix_tokens
        if self.pooling == "token":
            return tokens[:, 0].float()
        return tokens[:, prefix:].mean(dim=1).float()

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_name, "pooling": self.pooling}

    def cache_identity(self) -> dict:
        import timm

        return {
            "class": "TimmViTEncoder",
            **self.describe(),
            "weights_sha256": self.weights_sha256,
            "timm": timm.__version__,
        }


# Masks averaged by the MAE reconstruction attack: 4 and 16 gave the same AUCs on
# brainmri64 (within 0.01), so 8 is plenty.
RECONSTRUCTION_MASKS = 8


class MAEEncoder(Encoder):
    """A masked autoencoder trained on the generated images (mae.py): each image's
    final patch tokens without the class token, layer-normalised per token, flattened.

    Comparing whole token grids keeps the local detail that memorised images share;
    pooled vectors (class token, mean token) lose it. Layer-normalising each token gives
    every patch the same weight and removes per-token offsets; the attacks then centre
    the features on the candidates' mean (attacks.centre_on_candidates). Its
    reconstruction error is a second attack (`attacks`). The weights are cached, keyed
    by the training images and settings: an unchanged audit trains once.
    """

    name = "mae"

    def __init__(
        self,
        config: MAEConfig,
        preset: str,
        seed: int = 0,
        checkpoint: Path | None = None,
        cache: TensorCache | None = None,
        batch_size: int = 64,
        workers: int | None = None,
    ):
        from .checkpoints import load_state_dict
        from .mae import pretrained_config

        self.init: dict[str, torch.Tensor] | None = None
        if checkpoint is not None:
            config, self.init = pretrained_config(
                load_state_dict(checkpoint), config, str(checkpoint)
            )
        self.config, self.preset, self.seed, self.checkpoint = config, preset, seed, checkpoint
        self.cache, self.batch_size, self.workers = cache, batch_size, workers
        self.image_size = config.img_size
        self.model = None
        self.bf16 = False
        self.weights_sha256: str | None = None
        self.trained_on = 0

    def fit(self, generated: ImageSet, device: torch.device, progress: Progress) -> None:
        """Train on the generated images (at most `config.max_images`: those with the
        smallest content hashes, a random subset that depends on the contents alone),
        or load the weights cached for exactly these images and settings."""
        import timm

        from .mae import MAE_VERSION, build_model, train, use_bf16

        device = torch.device(device)
        chosen = list(range(min(len(generated), self.config.max_images)))  # hash order
        self.bf16 = use_bf16(device)
        key = cache_key(
            "mae-weights",
            MAE_VERSION,
            [generated.hashes[i] for i in chosen],
            asdict(self.config),
            self.seed,
            None if self.init is None else tensors_sha256(self.init),
            device_identity(device),
            self.bf16,
            __version__,
            torch.__version__,
            timm.__version__,
        )
        state = None if self.cache is None else self.cache.get("weights", key)
        if state is None:
            pixels = _decoded(generated, self.image_size, self.batch_size, self.workers, chosen)
            self.trained_on, epochs = len(pixels), self.config.epochs
            stage = f"training the MAE on {self.trained_on} generated images"
            progress(stage, 0, epochs)

            def epoch_done(epoch: int, loss: float) -> None:
                progress(f"{stage}, loss {loss:.3f}", epoch + 1, epochs)

            model = train(pixels, self.config, self.seed, device, self.init, epoch_done)
            state = model.state_dict()
            if self.cache is not None:
                self.cache.put("weights", key, state)
        else:
            model = build_model(self.config, self.seed).to(device)
            model.load_state_dict(state)
            self.trained_on = len(chosen)
        # fused attention encodes faster, also on a CPU (only its bf16 backward is slow)
        model.use_fused_attention(True)
        self.model = model.eval()
        self.weights_sha256 = tensors_sha256(state)

    def _model(self):
        if self.model is None:
            raise RuntimeError("MAEEncoder.fit must run before encoding")
        return self.model

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        from .mae import autocast

        with autocast(pixels.device, self.bf16):
            tokens = self._model().patch_tokens(pixels)
        return F.layer_norm(tokens.float(), tokens.shape[-1:]).flatten(1)

    @torch.inference_mode()
    def attacks(self, candidates: list[ImageSet], device: torch.device) -> list[AttackScores]:
        """Reconstruction: minus each candidate's error when the MAE, trained on the
        generated images, rebuilds its masked patches (the same fixed masks for all)."""
        from .mae import autocast

        model, device = self._model(), torch.device(device)
        pixels = torch.cat(
            [load_pixels(s, self.image_size, self.batch_size, self.workers) for s in candidates]
        )
        masks = torch.rand(
            RECONSTRUCTION_MASKS,
            self.config.num_patches,
            generator=torch.Generator().manual_seed(self.seed),
        ).to(device)
        errors = []
        for start in range(0, len(pixels), self.batch_size):
            with autocast(device, self.bf16):
                batch = pixels[start : start + self.batch_size].to(device)
                errors.append(model.reconstruction_error(batch, masks).float().cpu())
        kept = round(100 * (1 - self.config.mask_ratio))
        return [
            AttackScores(
                name=f"{self.name} reconstruction",
                description=f"minus the error of the MAE trained on the generated images "
                f"when it rebuilds the candidate from {kept}% of its patches (mean over "
                f"{RECONSTRUCTION_MASKS} fixed masks): it rebuilds memorised images better",
                scores=-torch.cat(errors).double().numpy(),
            )
        ]

    def describe(self) -> dict:
        c = self.config
        return {
            **super().describe(),
            "preset": self.preset,
            "model": f"ViT {c.depth} blocks x {c.embed_dim}, {c.patch_size}-px patches",
            "epochs": c.epochs,
            "trained_on": self.trained_on,
            "initialised_from": None if self.checkpoint is None else str(self.checkpoint),
            "precision": "bf16" if self.bf16 else "float32",
        }

    def cache_identity(self) -> dict:
        import timm

        if self.weights_sha256 is None:
            raise RuntimeError("MAEEncoder.fit must run before its features are cached")
        return {
            "class": "MAEEncoder",
            "config": asdict(self.config),
            "weights_sha256": self.weights_sha256,
            "bf16": self.bf16,
            "timm": timm.__version__,
        }


def _decoded(
    images: ImageSet, size: int, batch_size: int, workers: int | None, only: list[int]
) -> torch.Tensor:
    """The images at positions `only` that decode, (N, 1, size, size) grey; an unreadable
    one stops the audit (ImageSet.report_bad), or is left out with skip_bad."""
    batches = iter_batches(images, size, 1, batch_size, workers, only=only)
    return torch.cat([pixels for pixels, _ in batches] or [torch.zeros(0, 1, size, size)])


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AuditInputError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return torch.device(name)


def build_learned_encoder(
    settings, device: torch.device, cache: TensorCache | None = None
) -> Encoder | None:
    """The learned encoder named by `settings.features` (None for "pixels": the
    pixel-based feature spaces only)."""
    if settings.features == "pixels":
        return None
    if settings.features == "vit":
        return TimmViTEncoder(settings.vit_model, settings.checkpoint)
    if settings.features == "mae":
        from dataclasses import replace

        from .mae import PRESETS

        preset = settings.mae_preset
        if preset == "auto":
            preset = "gpu" if torch.device(device).type == "cuda" else "cpu"
        config = PRESETS[preset]
        if settings.mae_epochs is not None:
            config = replace(config, epochs=settings.mae_epochs)
        if settings.mae_max_images is not None:
            config = replace(config, max_images=settings.mae_max_images)
        return MAEEncoder(
            config,
            preset,
            settings.seed,
            settings.checkpoint,
            cache,
            settings.batch_size,
            settings.workers,
        )
    raise AuditInputError(f"unknown features {settings.features!r}")


def device_identity(device: torch.device) -> list[str]:
    """What about a device changes numbers: its kind and its model (a GPU's name, a
    CPU's architecture)."""
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return [device.type, where]


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
    return [(cache_key(base, [images.hashes[i] for i in p]), p) for p in packs.values()]


@torch.inference_mode()
def encode_images(
    images: ImageSet,
    encoder: Encoder,
    device: torch.device,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress = _no_progress,
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


__all__ = [
    "Encoder",
    "PatchEncoder",
    "PixelEncoder",
    "local_structure",
    "MAEEncoder",
    "TimmViTEncoder",
    "build_learned_encoder",
    "encode_images",
    "feature_packs",
    "resolve_device",
]
