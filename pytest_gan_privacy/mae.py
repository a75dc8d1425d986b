"""A masked autoencoder (MAE, He et al. 2022) on timm's ViT pieces, trained by the audit.

The audit trains it, without labels, on the generated images (encoders.MAEEncoder):
its patch tokens are a feature space for the nearest-neighbour, calibrated and
retrieval attacks.

timm gives the patch embedding and the transformer blocks; this module adds what timm
lacks: per-sample random masking, a light decoder with mask tokens, the normalised-pixel
loss on masked patches, the fixed 2-D sin-cos position embedding of the MAE paper, and
the training loop. Images enter as (B, 1, H, W) in [0, 1] and are scaled by the
config's pixel mean and standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn import functional as F

from .distributed import SINGLE, World
from .errors import AuditInputError
from .runtime import autocast, use_bf16
from .settings import MaePreset

# Part of the weights' cache key: bump it when training gives other weights.
MAE_VERSION = 2  # 2: fused AdamW


@dataclass(frozen=True)
class MAEConfig:
    """The model and how it is trained (plain data: it is part of the weights' cache key)."""

    img_size: int = 64
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    decoder_dim: int = 96
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # the paper's per-patch normalised targets: better features
    pixel_mean: float = 0.5  # [0, 1] -> [-1, 1]; ImageNet's grey statistics for its weights
    pixel_std: float = 0.5
    mask_ratio: float = 0.75
    # its tokens get worse the longer it trains on a few thousand generated images: 8
    # epochs beat 20 on every brainmri64 scenario, at 40 % of the time (docs/measurements.md)
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1.5e-3  # peak AdamW lr; a short schedule needs more than the paper's 1.5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 2.0
    weight_decay: float = 0.05
    # horizontal flips and shifts of up to 4 px: without them the MAE over-fits a few
    # thousand generated images and its tokens lose the dcgan-100 signal (README, "MAE")
    augment: bool = True
    max_images: int = 4096  # trained on at most this many generated images

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


PRESETS = {
    # Measured on brainmri64 (README, "MAE"): as good as 6 blocks of width 192 at 60 %
    # of the training time; 8-px patches keep the local detail memorised images share.
    MaePreset.CPU: MAEConfig(),
    # ViT-B's encoder on the same 8 x 8 grid of patches (16 px at 128 px, so that
    # timm's vit_base_patch16_224.mae weights fit), a light decoder for small data.
    # Not measured here: no GPU was available.
    MaePreset.GPU: MAEConfig(
        img_size=128,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_dim=256,
        decoder_depth=4,
        decoder_heads=8,
        epochs=100,
        batch_size=256,
        lr=1e-3,
        warmup_epochs=10,
        max_images=20_000,
    ),
}


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """The MAE paper's fixed 2-D sin-cos position embedding, (grid * grid, dim).

    The first half of the channels encodes the column, the second the row (the paper's
    code, so pretrained MAE weights see the embedding they were trained with).
    """
    if dim % 4:
        raise ValueError(f"the embedding width must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64),
        torch.arange(grid, dtype=torch.float64),
        indexing="ij",
    )

    def encode(position: torch.Tensor) -> torch.Tensor:
        angles = position.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random masking from uniform noise (B, N): the patches with the lowest
    noise are kept. Returns (ids_keep (B, K), ids_restore (B, N)); K = N * (1 - ratio),
    rounded, at least 1."""
    keep = max(1, round(noise.shape[1] * (1 - mask_ratio)))
    ids_shuffle = noise.argsort(dim=1)
    return ids_shuffle[:, :keep], ids_shuffle.argsort(dim=1)


class MaskedAutoencoder(nn.Module):
    """ViT encoder (timm's PatchEmbed and Blocks) and a light decoder, as in the paper."""

    def __init__(self, config: MAEConfig, in_chans: int = 1):
        super().__init__()
        self.config = c = config
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        pos = torch.cat([torch.zeros(1, c.embed_dim), sincos_pos_embed(c.embed_dim, c.grid)])
        self.register_buffer("pos_embed", pos[None], persistent=False)
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=c.qkv_bias, norm_layer=norm)
            for _ in range(c.depth)
        )
        self.norm = norm(c.embed_dim)

        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        pos = torch.cat([torch.zeros(1, c.decoder_dim), sincos_pos_embed(c.decoder_dim, c.grid)])
        self.register_buffer("decoder_pos_embed", pos[None], persistent=False)
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_dim, c.decoder_heads, c.mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = norm(c.decoder_dim)
        self.decoder_pred = nn.Linear(c.decoder_dim, c.patch_size**2 * in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        """The paper's: patch projection and linear layers xavier-uniform, tokens small."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def use_fused_attention(self, fused: bool) -> None:
        """timm's fused attention (SDPA) or its plain q @ k.T path. On a CPU the plain
        path trains twice as fast in bf16: the fused kernel's bf16 backward is slow."""
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = fused

    def scale(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.config.pixel_mean) / self.config.pixel_std

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p * p * C), in PatchEmbed's row-major patch order."""
        p, (b, c, h, w) = self.config.patch_size, images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def _encode(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled images -> normed tokens (B, 1 + kept, D), CLS first."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:]
        if ids_keep is not None:
            x = x.gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        masked = ids_restore.shape[1] + 1 - x.shape[1]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(x.shape[0], masked, -1)], dim=1)
        tokens = tokens.gather(1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def patch_errors(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Squared error of each masked patch's reconstruction (B, N); 0 for kept patches."""
        x = self.scale(pixels)
        ids_keep, ids_restore = masking(noise, self.config.mask_ratio)
        prediction = self._decode(self._encode(x, ids_keep), ids_restore).float()
        target = self.patchify(x).float()
        if self.config.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.var(-1, keepdim=True) + 1e-6
            ).sqrt()
        masked = torch.ones_like(noise)
        masked.scatter_(1, ids_keep, 0.0)
        return ((prediction - target) ** 2).mean(-1) * masked

    def forward(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training loss (what DistributedDataParallel calls)."""
        return self.loss(pixels, noise)

    def loss(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches (the visible ones are trivial)."""
        errors = self.patch_errors(pixels, noise)
        return errors.sum() / (errors.shape[0] * _masked_count(self.config))

    @torch.no_grad()
    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """All patches, unmasked: the final normed tokens without CLS, (B, N, D)."""
        return self._encode(self.scale(pixels))[:, 1:]


def _masked_count(config: MAEConfig) -> int:
    n = config.num_patches
    return n - max(1, round(n * (1 - config.mask_ratio)))


def augment(pixels: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """A random horizontal flip per image and one random shift per batch (edges repeated)."""
    b = pixels.shape[0]
    flip = (torch.rand(b, generator=generator) < 0.5).view(b, 1, 1, 1).to(pixels.device)
    x = torch.where(flip, pixels.flip(-1), pixels)
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def build_model(
    config: MAEConfig, seed: int, init: dict[str, torch.Tensor] | None = None
) -> MaskedAutoencoder:
    """A new MAE, its weights drawn from `seed` (without touching torch's global random
    state); `init`: pretrained encoder weights (see `pretrained_config`) loaded over them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskedAutoencoder(config)
    if init is not None:
        try:
            unexpected = model.load_state_dict(init, strict=False).unexpected_keys
        except RuntimeError as exc:  # a weight of another shape
            unexpected = [str(exc).splitlines()[-1].strip()]
        if unexpected:
            raise AuditInputError(
                "the pretrained weights do not fit a ViT encoder: " + ", ".join(unexpected[:3])
            )
    return model


def train(
    pixels: torch.Tensor,
    config: MAEConfig,
    seed: int,
    device: torch.device,
    init: dict[str, torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
    world: World = SINGLE,
) -> MaskedAutoencoder:
    """Train an MAE on `pixels` (N, 1, size, size) in [0, 1]; the model in eval mode.

    AdamW (betas 0.9 / 0.95, as the paper), linear warm-up then cosine decay, per step;
    the last partial batch of an epoch is dropped (a constant batch shape). One seeded
    generator draws the order, the masks and the augmentation, so a seed gives the same
    weights on the same device. `progress(epoch, mean loss)` after each epoch.

    Under torchrun (`world`, distributed.py) every rank draws the same batches, masks
    and augmentation and takes its slice of each batch; DistributedDataParallel
    averages the gradients, so each step is the full batch's step, computed in parts.
    """
    model = build_model(config, seed, init).to(device)
    model.use_fused_attention(device.type == "cuda")
    bf16 = use_bf16(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(model, config)
    n = len(pixels)
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch
    lr_at = _schedule(config, steps_per_epoch)
    pixels = pixels.to(device)
    model.train()
    step_loss = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(model)
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        losses = torch.zeros(steps_per_epoch)
        for i in range(steps_per_epoch):
            x = pixels[order[i * batch : (i + 1) * batch]]
            if config.augment:
                x = augment(x, generator)
            noise = torch.rand(len(x), config.num_patches, generator=generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            if world.distributed:  # this rank's slice of the batch
                x = x.tensor_split(world.size)[world.rank]
                noise = noise.tensor_split(world.size)[world.rank]
            with autocast(device, bf16):
                loss = step_loss(x, noise.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[i] = loss.detach().float().cpu()
            step += 1
        if progress is not None:
            progress(epoch, float(losses.mean()))
    return model.eval()


def _optimizer(model: MaskedAutoencoder, config: MAEConfig) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.95, as the paper), no weight decay on biases, norms and tokens."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "token" in n]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
        fused=True,  # one kernel for all parameters: 8 % faster steps on a CPU
    )


def _schedule(config: MAEConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate of each step: linear warm-up, then cosine decay to min_lr."""
    total = config.epochs * steps_per_epoch
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * t))

    return lr_at


# Keys of a ViT's encoder in timm's and the official MAE checkpoints (also ours).
ENCODER_KEYS = ("patch_embed.", "cls_token", "blocks.", "norm.")


def pretrained_config(
    state: dict[str, torch.Tensor], preset: MAEConfig, where: str
) -> tuple[MAEConfig, dict[str, torch.Tensor]]:
    """The config and initial weights for a pretrained ViT encoder: timm's
    `vit_base_patch16_224.mae` layout or the official MAE checkpoint (`{"model": ...}`,
    as checkpoints.load_state_dict returns it).

    The encoder's width, depth and patch size come from the weights (64 channels per
    attention head, ViT-H's 80 excepted); the image size keeps the preset's grid of
    patches; the decoder and the training schedule are the preset's. RGB patch kernels
    are summed for grey images (timm's adapt_input_conv); position embeddings are the
    fixed sin-cos ones, rebuilt for the grid; pixels are scaled with ImageNet's grey
    statistics, which the weights were trained with.
    """
    from timm.models import adapt_input_conv

    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_KEYS)}
    kernel = encoder.get("patch_embed.proj.weight")
    if kernel is None or kernel.ndim != 4 or "blocks.0.attn.qkv.weight" not in encoder:
        raise AuditInputError(
            f"the checkpoint {where} holds no ViT encoder (patch_embed.proj.weight and "
            "blocks.N.attn.qkv.weight): give timm's vit_base_patch16_224.mae weights or an "
            "official MAE checkpoint"
        )
    width, patch = kernel.shape[0], kernel.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in encoder if k.startswith("blocks."))
    config = replace(
        preset,
        img_size=preset.grid * patch,
        patch_size=patch,
        embed_dim=width,
        depth=depth,
        num_heads=16 if width == 1280 else max(1, width // 64),
        mlp_ratio=encoder["blocks.0.mlp.fc1.weight"].shape[0] / width,
        qkv_bias="blocks.0.attn.qkv.bias" in encoder,
        pixel_mean=0.449,  # the mean and std of ImageNet's three channels
        pixel_std=0.226,
    )
    encoder["patch_embed.proj.weight"] = adapt_input_conv(1, kernel)
    return config, {k: v.float() for k, v in encoder.items()}


__all__ = [
    "MAEConfig",
    "MaskedAutoencoder",
    "PRESETS",
    "pretrained_config",
    "train",
]
