"""Pictures: digit grids, schedule curves, loss curves and reverse-process animations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) in [-1, 1] -> (N, 28, 28) uint8 in [0, 255]."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile N digits into one uint8 image with ``nrow`` digits per row (default: square)."""
    from torchvision.utils import make_grid

    nrow = nrow or max(1, int(np.ceil(np.sqrt(len(images)))))
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=pad, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return (grid[0].numpy() * 255).round().astype(np.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_array(images, nrow)).save(path)
    return path
