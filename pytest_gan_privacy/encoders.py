"""Encoders: images -> feature vectors, behind one small interface.

An encoder declares the input it needs (size and channels), may learn from the
generated images first (`fit`, used by the MAE), and maps a batch of pixels to
feature vectors. `encode_images` streams an image set through it; features are
L2-normalised so that a dot product is a cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from .errors import AuditInputError
from .images import ImageSet, iter_batches

Progress = Callable[[str, int, int], None]


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

    def describe(self) -> dict:
        """Settings that identify this encoder (shown in the report)."""
        return {"name": self.name, "image_size": self.image_size, "channels": self.channels}


class PixelEncoder(Encoder):
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
        x = (pixels - self.mean) / self.std
        with _autocast(pixels.device):
            tokens = self.model.forward_features(x)
        prefix = self.model.num_prefix_tokens
        if self.pooling == "token":
            return tokens[:, 0].float()
        return tokens[:, prefix:].mean(dim=1).float()

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_name, "pooling": self.pooling}


def _autocast(device: torch.device):
    """bf16 autocast on a GPU, where it doubles matmul throughput; exact float32 on CPU."""
    enabled = device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AuditInputError(
            "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return torch.device(name)


def build_encoder(settings) -> Encoder:
    """The encoder named by `settings.features`."""
    if settings.features == "pixels":
        return PixelEncoder()
    if settings.features == "vit":
        return TimmViTEncoder(settings.vit_model, settings.checkpoint)
    raise AuditInputError(f"unknown features {settings.features!r}")


@torch.inference_mode()
def encode_images(
    images: ImageSet,
    encoder: Encoder,
    device: torch.device,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress = _no_progress,
) -> torch.Tensor:
    """Encode every image of the set: (N, D) float32, L2-normalised, on the CPU."""
    encoder.to(device)
    features: torch.Tensor | None = None
    done = 0
    progress(f"encoding {images.role}", 0, len(images))
    batches = iter_batches(images, encoder.image_size, encoder.channels, batch_size, workers)
    for pixels, indices in batches:
        out = encoder.encode_batch(pixels.to(device, non_blocking=True))
        out = F.normalize(out.float(), dim=1).cpu()
        if features is None:
            features = torch.zeros(len(images), out.shape[1])
        features[indices] = out
        done += len(indices)
        progress(f"encoding {images.role}", done, len(images))
    assert features is not None  # iter_batches raises when nothing decodes
    return features


__all__ = [
    "Encoder",
    "PixelEncoder",
    "TimmViTEncoder",
    "build_encoder",
    "encode_images",
    "resolve_device",
]
