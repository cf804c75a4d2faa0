"""Pictures: digit grids, schedule curves, loss curves and reverse-process animations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .schedule import NoiseSchedule


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


def plot_image_table(images: torch.Tensor, column_titles: Sequence[str], row_titles: Sequence[str] = ()):
    """Digits (rows, columns, 1, H, W) in [-1, 1] drawn as one table with titled columns and rows."""
    import matplotlib.pyplot as plt

    rows, columns, _, side, _ = images.shape
    pad = 2
    fig, ax = plt.subplots(figsize=(1.2 * columns + 0.8, 1.2 * rows + 0.5), layout="constrained")
    ax.imshow(grid_array(images.flatten(0, 1), nrow=columns, pad=pad), cmap="gray", vmin=0, vmax=255)
    # Tick marks at the cell centres carry the titles, so they line up with the digits at any size.
    centres = pad + (side + pad) * np.arange(max(rows, columns)) + side / 2
    ax.set_xticks(centres[:columns], column_titles)
    ax.set_yticks(centres[: len(row_titles)], row_titles)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.set_frame_on(False)
    return fig


def noising_strip(images: torch.Tensor, schedule: NoiseSchedule, ts: Sequence[int], seed: int = 0):
    """Each digit (a row) noised by ``schedule.q_sample`` to each code-indexed timestep in ``ts`` (the columns).

    A digit keeps one noise draw along its row, so the row shows that noise
    taking over. Columns are titled with the paper's t = index + 1.
    """
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.device)
    x_t = schedule.q_sample(
        images.repeat_interleave(len(ts), dim=0),
        torch.as_tensor(ts).repeat(len(images)),
        noise.repeat_interleave(len(ts), dim=0),
    )
    fig = plot_image_table(x_t.unflatten(0, (len(images), len(ts))), [f"t = {t + 1}" for t in ts])
    fig.suptitle(f"{schedule.kind} schedule")
    return fig


def plot_schedules(schedules: dict[str, NoiseSchedule]):
    """alpha_bar_t, sqrt(alpha_bar_t) and SNR(t) (log scale) against the paper's t, one curve per schedule."""
    import matplotlib.pyplot as plt

    panels = (
        ("alpha_bars", r"$\bar\alpha_t$: variance kept from $x_0$", "linear"),
        ("sqrt_alpha_bars", r"$\sqrt{\bar\alpha_t}$: weight of $x_0$ in $x_t$", "linear"),
        ("snr", r"SNR$(t) = \bar\alpha_t \,/\, (1 - \bar\alpha_t)$", "log"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), layout="constrained")
    for ax, (buffer, title, yscale) in zip(axes, panels, strict=True):
        for name, schedule in schedules.items():
            ax.plot(np.arange(1, schedule.timesteps + 1), getattr(schedule, buffer).cpu().numpy(), label=name)
        ax.set(title=title, xlabel="t", yscale=yscale)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return fig


def plot_gaussian_check(x_T: torch.Tensor):
    """Histogram of all pixel values of x_T against the N(0, 1) density they should follow."""
    import matplotlib.pyplot as plt

    values = x_T.detach().float().cpu().flatten().numpy()
    z = np.linspace(-4.5, 4.5, 200)
    fig, ax = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
    ax.hist(values, bins=90, range=(z[0], z[-1]), density=True, alpha=0.6, label=f"pixels of $x_T$ ({values.size:,} values)")
    ax.plot(z, np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi), color="black", label=r"$\mathcal{N}(0, 1)$ density")
    ax.set(xlabel="pixel value", ylabel="density")
    ax.legend()
    return fig
