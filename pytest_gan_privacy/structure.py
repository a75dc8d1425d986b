"""Local structure: the image transform that the `patches` space and the near-copy
scan share.

Every window x window tile is centred and normalised and the whole is L2-normalised,
so the dot product of two images' vectors is a weighted mean of their tiles' Pearson
correlations: the structure term of SSIM, in one matrix multiply. It sees what
memorised images share locally and ignores brightness and contrast.
"""

from __future__ import annotations

import torch

WINDOW = 8  # pixels per tile side, at the 64 px working size
# SSIM's stabilising constant: flat windows (background) get almost no weight instead
# of amplifying noise. 30 grey levels squared per pixel, on the [0, 1] scale.
LOCAL_STRUCTURE_C = 30 / 255**2


def tiles_of(images: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*w*w, L): the non-overlapping window x window tiles, as
    F.unfold(kernel_size=window, stride=window) gives them, by a reshape (unfold's
    general im2col costs 2 ms a call on a small batch with passive threads)."""
    n, c, h, w = images.shape
    th, tw = h // window, w // window
    grid = images[..., : th * window, : tw * window].reshape(n, c, th, window, tw, window)
    return grid.permute(0, 1, 3, 5, 2, 4).reshape(n, c * window * window, th * tw)


def structure_of_tiles(tiles: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, w*w, L) tiles -> (N, D) local-structure vectors: each tile centred and
    normalised, the whole L2-normalised (F.normalize's arithmetic, written into `out`
    when given)."""
    tiles = tiles - tiles.mean(dim=1, keepdim=True)
    norm = ((tiles * tiles).sum(dim=1, keepdim=True) + LOCAL_STRUCTURE_C * tiles.shape[1]).sqrt()
    flat = (tiles / norm).flatten(1)
    length = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.div(flat, length, out=out)


def local_structure(images: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """(N, 1, H, W) -> (N, D) local-structure vectors (see the module docstring)."""
    return structure_of_tiles(tiles_of(images.float(), window))


def crop(images: torch.Tensor, margin: int, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """The (H - 2 margin) x (W - 2 margin) crop of (..., H, W) images, moved by
    (dy, dx) from the centre (|dy|, |dx| <= margin)."""
    h, w = images.shape[-2:]
    return images[..., margin + dy : h - margin + dy, margin + dx : w - margin + dx]
