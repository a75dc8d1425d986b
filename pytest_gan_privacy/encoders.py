"""Encoders: images -> feature vectors, behind one small interface and a registry.

An encoder declares the input it needs (size and channels) and what differs between
feature spaces (whether features are centred before the similarity attacks, which
attacks of attacks.py apply), may learn from the generated images first (`fit`: the
MAE trains, a ViT loads its checkpoint), and maps a batch of pixels to feature vectors.
Constructors only configure. features.encode_images streams an image set through an
encoder; features are L2-normalised so that a dot product is a cosine similarity.

`feature_spaces(settings, device, cache)` is where the name given by `--features`
becomes objects: the pixel-based spaces always, then the learned one from `LEARNED`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from . import __version__
from .cache import TensorCache, cache_key, tensors_sha256
from .errors import AuditInputError
from .images import ImageSet, iter_batches
from .runtime import Progress, autocast, device_identity, use_bf16
from .settings import AuditSettings, Features, MaePreset
from .structure import WINDOW, local_structure

if TYPE_CHECKING:
    from .mae import MAEConfig, MaskedAutoencoder

WORKING_SIZE = 64  # pixels: the size the pixel, local-structure and near-copy spaces use

# The attacks a feature space can take (attacks.py): the names are part of the
# attack names in the JSON ("patches calibrated"), a public interface.
NEAREST, CALIBRATED, RETRIEVAL = ("nearest-neighbour", "calibrated", "retrieval")
SIMILARITY_ATTACKS = (NEAREST, CALIBRATED, RETRIEVAL)


class Encoder:
    """The interface every feature extractor implements."""

    name: str = "encoder"
    image_size: int = WORKING_SIZE
    channels: int = 1
    # Centre the features on the candidates' mean before the similarity attacks
    # (attacks.centre_on_candidates): what all real images share is not evidence.
    centre: bool = True
    attacks: tuple[str, ...] = SIMILARITY_ATTACKS

    def to(self, device: torch.device) -> Encoder:
        """Move any weights to the device (nothing by default)."""
        return self

    def fit(self, generated: ImageSet, device: torch.device, progress: Progress) -> None:
        """Learn from the generated images, or load weights, before encoding (nothing
        by default)."""

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, channels, size, size) in [0, 1], on the device -> (B, D) features."""
        raise NotImplementedError

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
    brightness and contrast. The seed's baseline as it ran it: nearest neighbour only,
    not centred on the candidates.
    """

    name = "pixels"
    centre = False
    attacks = (NEAREST,)

    def __init__(self, image_size: int = WORKING_SIZE):
        self.image_size = image_size

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        flat = pixels.flatten(1).float()
        return flat - flat.mean(dim=1, keepdim=True)


class PatchEncoder(FixedEncoder):
    """Local structure of 8x8 tiles (structure.local_structure).

    Sees what memorised images share locally and ignores brightness and contrast:
    on brainmri64 `vae-100` it lifts nearest-neighbour AUC from 0.74 (pixels) to 0.94.
    """

    name = "patches"

    def __init__(self, image_size: int = WORKING_SIZE, window: int = WINDOW):
        self.image_size, self.window = image_size, window

    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return local_structure(pixels, self.window)

    def describe(self) -> dict:
        return {**super().describe(), "window": self.window}


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
        self.model_name, self.checkpoint, self.pooling = model_name, Path(checkpoint), pooling
        self.requested_size = image_size
        self.image_size = image_size or 224
        self.model = None
        self.weights_sha256: str | None = None

    def fit(self, generated: ImageSet, device: torch.device, progress: Progress) -> None:
        """Build the model and load the checkpoint (the ViT learns nothing here)."""
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        from .checkpoints import load_state_dict

        try:
            kwargs = {"img_size": self.requested_size} if self.requested_size else {}
            model = timm.create_model(self.model_name, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as exc:  # timm's "Unknown model" error
            raise AuditInputError(f"unknown timm model {self.model_name!r}: {exc}") from None
        state = load_state_dict(self.checkpoint)
        # the MAE decoder and classifier heads are not part of the encoder
        state = {
            k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token", "head."))
        }
        state = checkpoint_filter_fn(state, model)  # resizes position embeddings
        missing, _unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise AuditInputError(
                f"the checkpoint {self.checkpoint} does not fit the timm model "
                f"{self.model_name!r}: {len(missing)} weights missing (e.g. "
                f"{', '.join(missing[:3])}). Name the matching model with --vit-model."
            )
        self.weights_sha256 = tensors_sha256(state)
        self.model = model.eval()
        self.image_size = model.patch_embed.img_size[0]
        cfg = model.pretrained_cfg or {}
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)

    def _model(self):
        if self.model is None:
            raise RuntimeError("TimmViTEncoder.fit must run before encoding")
        return self.model

    def to(self, device: torch.device) -> TimmViTEncoder:
        self._model().to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        model = self._model()
        x = (pixels - self.mean) / self.std
        # bf16 on a GPU, where it doubles matmul throughput; exact float32 on a CPU
        with autocast(pixels.device, pixels.device.type == "cuda"):
            tokens = model.forward_features(x)
        if self.pooling == "token":
            return tokens[:, 0].float()
        return tokens[:, model.num_prefix_tokens :].mean(dim=1).float()

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_name, "pooling": self.pooling}

    def cache_identity(self) -> dict:
        from importlib.metadata import version

        if self.weights_sha256 is None:
            raise RuntimeError("TimmViTEncoder.fit must run before its features are cached")
        return {
            "class": "TimmViTEncoder",
            **self.describe(),
            "weights_sha256": self.weights_sha256,
            "timm": version("timm"),
        }


class MAEEncoder(Encoder):
    """A masked autoencoder trained on the generated images (mae.py): each image's
    final patch tokens without the class token, layer-normalised per token, flattened.

    Comparing whole token grids keeps the local detail that memorised images share;
    pooled vectors (class token, mean token) lose it. Layer-normalising each token gives
    every patch the same weight and removes per-token offsets; the attacks then centre
    the features on the candidates' mean. The weights are cached, keyed by the training
    images and settings: an unchanged audit trains once, also when several pytest-xdist
    workers start it together (they wait on a lock on the entry).
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
        self.config, self.preset, self.seed, self.checkpoint = config, preset, seed, checkpoint
        self.cache, self.batch_size, self.workers = cache, batch_size, workers
        self.image_size = config.img_size
        self.model: MaskedAutoencoder | None = None
        self.encoding_model: MaskedAutoencoder | None = None  # bf16 weights where bf16
        self.bf16 = False
        self.weights_sha256: str | None = None
        self.trained_on = 0

    def fit(self, generated: ImageSet, device: torch.device, progress: Progress) -> None:
        """Train on the generated images (at most `config.max_images`: those with the
        smallest content hashes, a random subset that depends on the contents alone),
        or load the weights cached for exactly these images and settings."""
        from .checkpoints import load_state_dict
        from .distributed import broadcast, join
        from .mae import build_model, pretrained_config, train

        device = torch.device(device)
        init = None
        if self.checkpoint is not None:  # a pretrained start decides the model's shape
            self.config, init = pretrained_config(
                load_state_dict(self.checkpoint), self.config, str(self.checkpoint)
            )
            self.image_size = self.config.img_size
        chosen = list(range(min(len(generated), self.config.max_images)))  # hash order
        self.bf16 = use_bf16(device)
        key = self._weights_key([generated.hashes[i] for i in chosen], init, device)
        # under torchrun the ranks train together (DDP): rank 0 reads the cache and
        # shares what it found, and no rank waits on a lock the others need
        world = join(device)
        no_lock = self.cache is None or world.distributed
        lock = nullcontext() if no_lock else self.cache.lock("weights", key)
        with lock:  # another process training the same weights: wait and reuse them
            state = None if self.cache is None or not world.main else self.cache.get("weights", key)
            state = broadcast(world, state)
            if state is None:
                pixels = _decoded(generated, self.image_size, self.batch_size, self.workers, chosen)
                self.trained_on, epochs = len(pixels), self.config.epochs
                stage = f"training the MAE on {self.trained_on} generated images"
                progress(stage, 0, epochs)

                def epoch_done(epoch: int, loss: float) -> None:
                    progress(f"{stage}, loss {loss:.3f}", epoch + 1, epochs)

                model = train(pixels, self.config, self.seed, device, init, epoch_done, world)
                state = model.state_dict()
                if self.cache is not None and world.main:
                    self.cache.put("weights", key, state)
            else:
                model = build_model(self.config, self.seed).to(device)
                model.load_state_dict(state)
                self.trained_on = len(chosen)
        # fused attention encodes faster, also on a CPU (only its bf16 backward is slow)
        model.use_fused_attention(True)
        self.model = model.eval()
        # encoding runs on a bf16 copy of the weights rather than under autocast, which
        # casts every weight and activation at every call: 1.2x (benchmarks/mae_speed.py)
        self.encoding_model = (
            copy.deepcopy(self.model).to(torch.bfloat16) if self.bf16 else self.model
        )
        self.weights_sha256 = tensors_sha256(state)

    def _weights_key(self, hashes: list[str], init: dict | None, device: torch.device) -> str:
        """The cache key of the weights trained on these images with these settings."""
        from importlib.metadata import version

        from .mae import MAE_VERSION

        return cache_key(
            "mae-weights",
            MAE_VERSION,
            hashes,
            asdict(self.config),
            self.seed,
            None if init is None else tensors_sha256(init),
            device_identity(device),
            self.bf16,
            __version__,
            torch.__version__,
            version("timm"),
        )

    def _model(self) -> MaskedAutoencoder:
        if self.model is None:
            raise RuntimeError("MAEEncoder.fit must run before encoding")
        return self.model

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        self._model()  # fitted?
        model = self.encoding_model
        tokens = model.patch_tokens(pixels.to(model.cls_token.dtype))
        return F.layer_norm(tokens.float(), tokens.shape[-1:]).flatten(1)

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
        from importlib.metadata import version

        if self.weights_sha256 is None:
            raise RuntimeError("MAEEncoder.fit must run before its features are cached")
        return {
            "class": "MAEEncoder",
            "config": asdict(self.config),
            "weights_sha256": self.weights_sha256,
            "precision": "bf16 weights" if self.bf16 else "float32",
            "timm": version("timm"),
        }


def _decoded(
    images: ImageSet, size: int, batch_size: int, workers: int | None, only: list[int]
) -> torch.Tensor:
    """The images at positions `only` that decode, (N, 1, size, size) grey; an unreadable
    one stops the audit (ImageSet.report_bad), or is left out with skip_bad."""
    batches = iter_batches(images, size, 1, batch_size, workers, only=only)
    return torch.cat([pixels for pixels, _ in batches] or [torch.zeros(0, 1, size, size)])


# --- the registry: `--features NAME` -> the learned feature space -------------------


def _mae(settings: AuditSettings, device: torch.device, cache: TensorCache | None) -> Encoder:
    from .mae import PRESETS

    preset = settings.mae_preset
    if preset is MaePreset.AUTO:
        preset = MaePreset.GPU if torch.device(device).type == "cuda" else MaePreset.CPU
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


def _vit(settings: AuditSettings, device: torch.device, cache: TensorCache | None) -> Encoder:
    return TimmViTEncoder(settings.vit_model, settings.checkpoint)


LearnedFactory = Callable[[AuditSettings, torch.device, "TensorCache | None"], Encoder]

# every settings.Features member's learned space; "pixels" adds none to the pixel-based ones
LEARNED: dict[Features, LearnedFactory | None] = {
    Features.MAE: _mae,
    Features.PIXELS: None,
    Features.VIT: _vit,
}


def feature_spaces(
    settings: AuditSettings, device: torch.device, cache: TensorCache | None = None
) -> list[Encoder]:
    """The audit's feature spaces, in the order their attacks are listed: pixels (the
    seed's baseline), local structure, then the learned space `settings.features` names."""
    spaces: list[Encoder] = [PixelEncoder(), PatchEncoder()]
    factory = LEARNED[settings.features]
    if factory is not None:
        spaces.append(factory(settings, device, cache))
    return spaces
