"""Local structure: the image transform that the `patches` space and the near-copy
scan share.

Every window x window tile is centred and normalised and the whole is L2-normalised,
so the dot product of two images' vectors is a weighted mean of their tiles' Pearson
correlations: the structure term of SSIM, in one matrix multiply. It sees what
memorised images share locally and ignores brightness and contrast.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

WINDOW = 8  # pixels per tile side, at the 64 px working size
# SSIM's stabilising constant: flat windows (background) get almost no weight instead
# of amplifying noise. 30 grey levels squared per pixel, on the [0, 1] scale.
LOCAL_STRUCTURE_C = 30 / 255**2


def local_structure(images: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(N, 1, H, W) -> (N, D) local-structure vectors (see the module docstring)."""
    tiles = F.unfold(images.float(), kernel_size=window, stride=window)  # (N, w*w, L)
    tiles = tiles - tiles.mean(dim=1, keepdim=True)
    norm = (tiles.square().sum(dim=1, keepdim=True) + LOCAL_STRUCTURE_C * tiles.shape[1]).sqrt()
    return F.normalize((tiles / norm).flatten(1), dim=1)


def crop(images: torch.Tensor, margin: int, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """The (H - 2 margin) x (W - 2 margin) crop of (..., H, W) images, moved by
    (dy, dx) from the centre (|dy|, |dx| <= margin)."""
    h, w = images.shape[-2:]
    return images[..., margin + dy : h - margin + dy, margin + dx : w - margin + dx]
