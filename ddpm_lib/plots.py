"""Pictures: digit grids, schedule curves, loss curves and reverse-process animations."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .sampling import SAMPLER_REGISTRY
from .schedule import NoiseSchedule
from .unet import ResBlock, SelfAttention

# matplotlib and PIL are imported inside the functions that draw: the trainer and the CLI import this
# module only to save PNG grids, and start faster without matplotlib.


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


def plot_loss(losses: Sequence[float] | dict[str, Sequence[float]], measures: str, steps_per_epoch: int | None = None, window: int = 50):
    """Per-step training loss (faint) and its running mean over ``window`` steps, epochs marked.

    ``losses``: one run's, or several runs' by name, drawn on the same axes in their own colours, every
    run after the first dashed so that runs lying on top of each other stay visible.
    ``measures``: what the loss is, for the axis: the run's ``Objective.loss_label()``."""
    import matplotlib.pyplot as plt

    runs = losses if isinstance(losses, dict) else {"": losses}
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for k, (name, run) in enumerate(runs.items()):
        run = np.asarray(run, dtype=float)
        steps = np.arange(1, len(run) + 1)
        style, prefix = ("-" if k == 0 else "--"), (f"{name}, " if name else "")
        (line,) = ax.plot(steps, run, ls=style, alpha=0.25, label=f"{prefix}per step")
        if len(run) >= window:
            running = np.convolve(run, np.ones(window) / window, mode="valid")
            colour = line.get_color() if len(runs) > 1 else None  # one run: its mean stands out in a colour of its own
            ax.plot(steps[window - 1 :], running, ls=style, color=colour, label=f"{prefix}mean of {window} steps")
    if steps_per_epoch:
        for boundary in range(steps_per_epoch, max(len(run) for run in runs.values()), steps_per_epoch):
            ax.axvline(boundary, color="gray", lw=0.5, ls=":")
    ax.set(xlabel="optimisation step", ylabel=f"loss: {measures}", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_epoch_grids(paths: Sequence[str | Path], max_columns: int = 5):
    """The sample grids saved after each epoch (epoch_001.png, ...), side by side with their epoch numbers."""
    import matplotlib.pyplot as plt
    from PIL import Image

    paths = [Path(p) for p in paths]
    columns = min(len(paths), max_columns)
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), layout="constrained", squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path in zip(axes.flat, paths):
        ax.imshow(np.asarray(Image.open(path)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"epoch {int(path.stem.split('_')[-1])}")
    return fig


def plot_grids(batches: dict[str, torch.Tensor], nrow: int | None = None):
    """Batches of digits (N, 1, H, W) in [-1, 1], each tiled by ``grid_array``, side by side under their names."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(batches), figsize=(3.4 * len(batches), 3.7), layout="constrained", squeeze=False)
    for ax, (name, images) in zip(axes[0], batches.items(), strict=True):
        ax.imshow(grid_array(images, nrow), cmap="gray", vmin=0, vmax=255)
        ax.set_title(name)
        ax.axis("off")
    return fig


def save_gif(
    frames: Sequence[torch.Tensor], path: str | Path, nrow: int | None = None, frame_ms: int = 80, hold_last_ms: int = 2000
) -> Path:
    """An animated GIF, looping, with one digit grid (``grid_array``) per frame; the last frame stays ``hold_last_ms``.

    Each frame is a batch (N, 1, H, W) in [-1, 1]. The grids keep their size,
    one file pixel per image pixel: GIF compresses noise poorly, and enlarging
    the frames would multiply the file size without adding detail.
    """
    from PIL import Image

    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.fromarray(grid_array(frame, nrow)) for frame in frames]
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def plot_guidance_and_steps(curves: dict[str, Sequence[dict]]):
    """The two measured curves of notebook 04, for one or more sets of rows (as from ``evaluation.guidance_and_steps_curves``).

    Top: against the guidance weight w, the share of digits recognised as the
    one asked for (worst digit solid, mean dashed) and classifier-FID. Bottom:
    against the number of steps, classifier-FID (a sampler that always takes
    all T steps, DDPM, as a dashed level) and the wall time to draw 1,000
    digits (w other than 0 and 1 doubles the network's work per step: one
    call on a doubled batch). Each set of rows gets one colour; its real-digit
    floor is the dotted level in the FID panels. Each sampler that takes a
    number of steps gets its own line style, in the order of ``SAMPLER_REGISTRY``.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), layout="constrained")
    (acc_ax, fid_w_ax), (fid_steps_ax, time_ax) = axes
    drawn = {row["sampler"] for rows in curves.values() for row in rows if row["curve"] == "steps"}
    with_steps = [sampler for sampler in SAMPLER_REGISTRY.values() if sampler.uses_steps and sampler.name in drawn]
    line_styles = dict(zip((sampler.name for sampler in with_steps), itertools.cycle(["-", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2))])))
    for (name, rows), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        by_w = sorted((r for r in rows if r["curve"] == "guidance"), key=lambda r: r["guidance"])
        n = rows[0]["n"]
        w = [r["guidance"] for r in by_w]
        acc_ax.plot(w, [100 * r["worst_digit_accuracy"] for r in by_w], "o-", color=colour, label=f"{name}: worst digit")
        acc_ax.plot(w, [100 * r["mean_digit_accuracy"] for r in by_w], "--", color=colour, label=f"{name}: mean")
        fid_w_ax.plot(w, [r["fid"] for r in by_w], "o-", color=colour, label=name)
        fid_w_ax.axhline(rows[0]["floor_fid"], color=colour, linestyle=":", label=f"real digits, N = {n:,}")
        fid_steps_ax.axhline(rows[0]["floor_fid"], color=colour, linestyle=":")
        for sampler in SAMPLER_REGISTRY.values():
            measured = sorted((r for r in rows if r["curve"] == "steps" and r["sampler"] == sampler.name), key=lambda r: r["steps"])
            if sampler.uses_steps:  # a line against the number of steps for each w
                for guidance, marker in zip(sorted({r["guidance"] for r in measured}), "os^v"):
                    line = [r for r in measured if r["guidance"] == guidance]
                    steps = [r["steps"] for r in line]
                    label = f"{name}: {sampler.label}, w = {guidance:g}"
                    style = dict(marker=marker, linestyle=line_styles[sampler.name], color=colour, label=label)
                    fid_steps_ax.plot(steps, [r["fid"] for r in line], **style)
                    time_ax.plot(steps, [1000 * r["seconds"] / r["n"] for r in line], **style)
            else:  # always all T steps: a level to hold the lines against
                for r in measured:
                    fid_steps_ax.axhline(
                        r["fid"], color=colour, linestyle="--", label=f"{name}: {sampler.label} {r['steps']} steps, w = {r['guidance']:g}"
                    )
                    time_ax.plot(
                        [r["steps"]],
                        [1000 * r["seconds"] / r["n"]],
                        "s",
                        color=colour,
                        markerfacecolor="none",
                        label=f"{name}: {sampler.label}, w = {r['guidance']:g}",
                    )
    acc_ax.set(xlabel="guidance weight w", ylabel="% recognised as the digit asked for", title="guidance: asked-for digit")
    fid_w_ax.set(xlabel="guidance weight w", ylabel="classifier-FID (lower is better)", title="guidance: distance to real digits")
    steps_of = " / ".join(sampler.label for sampler in with_steps)
    fid_steps_ax.set(xscale="log", xlabel=f"steps of {steps_of}" if steps_of else "steps", ylabel="classifier-FID", title="steps: quality")
    time_ax.set(xscale="log", yscale="log", xlabel="steps", ylabel="seconds per 1,000 digits", title="steps: wall time")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_quality_by_steps(rows: Sequence[dict]):
    """Quality against the number of steps, one line per sampler, from rows of one measurement at one N.

    Each row: ``sampler`` (a name in ``SAMPLER_REGISTRY``), ``steps``, ``n``, ``confident`` (a fraction),
    ``fid`` and, if known, ``floor_fid`` (real digits at the same N), as in
    ``assets/measurements/cpu_dpm_solver_*.csv``. Left: the confident fraction in %; right: classifier-FID on
    a log scale, the floor dotted. Samplers in the registry's order, named by their labels.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    unknown = sorted({row["sampler"] for row in rows} - set(SAMPLER_REGISTRY))
    if unknown:
        raise ValueError(f"rows name samplers that are not registered: {unknown}; known: {tuple(SAMPLER_REGISTRY)}")
    sizes = sorted({row["n"] for row in rows})
    if len(sizes) != 1:
        raise ValueError(f"rows measured at N = {sizes}: classifier-FIDs compare only at one N, so plot each N on its own")
    fig, (confident_ax, fid_ax) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for sampler in SAMPLER_REGISTRY.values():
        line = sorted((row for row in rows if row["sampler"] == sampler.name), key=lambda row: row["steps"])
        if line:
            steps = [row["steps"] for row in line]
            confident_ax.plot(steps, [100 * row["confident"] for row in line], "o-", label=sampler.label)
            fid_ax.plot(steps, [row["fid"] for row in line], "o-", label=sampler.label)
    for floor in sorted({row["floor_fid"] for row in rows if "floor_fid" in row}):
        fid_ax.axhline(floor, color="black", linestyle=":", label=f"real digits, N = {sizes[0]:,}")
    confident_ax.set(xlabel="steps (network calls)", ylabel="% confident", title=f"confident digits (N = {sizes[0]:,})")
    fid_ax.set(xlabel="steps (network calls)", ylabel="classifier-FID (lower is better)", yscale="log", title="distance to real digits")
    fid_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.2, 0.5, 1, 2, 5, ...
    fid_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.5 rather than 5 x 10^-1
    fid_ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in (confident_ax, fid_ax):
        ax.set_xticks(sorted({row["steps"] for row in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_loss_weights(schedule: NoiseSchedule, min_snr_gamma: float = 5.0):
    """How much each timestep's noise error counts under each objective, in units of ||eps - eps_theta||^2.

    The variational bound weighs L_{t-1} by beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) with
    sigma_t^2 = beta_tilde_t (Ho et al. eq. 12; t = 1 is the decoder term L_0 and is left out).
    L_simple drops that weight (1 for every t); predicting x_0 or v instead of eps, or min-SNR,
    amounts to other weights, written here through SNR(t) = alpha_bar_t / (1 - alpha_bar_t).
    """
    import matplotlib.pyplot as plt

    s = schedule
    t = np.arange(2, s.timesteps + 1)  # the paper's t; code index t - 1
    rows = slice(1, None)
    bound = (s.betas[rows] ** 2 / (2 * s.posterior_variance[rows] * s.alphas[rows] * (1 - s.alpha_bars[rows]))).numpy()
    snr = s.snr[rows].numpy()
    curves = {
        "variational bound (its weight, dropped by Ho et al.)": bound,
        "L_simple: eps target, every t alike": np.ones_like(snr),
        f"min-SNR-{min_snr_gamma:g}: min(SNR, {min_snr_gamma:g}) / SNR": np.minimum(snr, min_snr_gamma) / snr,
        "x_0 target, counted in eps terms: 1 / SNR": 1 / snr,
        "v target, counted in eps terms: (SNR + 1) / SNR": (snr + 1) / snr,
    }
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for (label, weight), style in zip(curves.items(), ("-", "-", "-", "--", ":")):
        ax.plot(t, weight, style, label=label, linewidth=2 if "bound" in label or "simple" in label else 1.5)
    ax.set(xlabel="timestep t", ylabel="weight on ||eps - eps_theta||^2", yscale="log", title=f"{s.kind} schedule, T = {s.timesteps}")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_timestep_embedding(embedding: torch.Tensor, timesteps: Sequence[int]):
    """The sinusoidal embedding as a heat map: one row per timestep, one column per feature."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    image = ax.imshow(
        embedding.numpy(),
        aspect="auto",
        cmap="RdBu",
        vmin=-1,
        vmax=1,
        interpolation="nearest",
        extent=(-0.5, embedding.shape[1] - 0.5, timesteps[-1] + 0.5, timesteps[0] - 0.5),
    )
    ax.set(xlabel="feature (sines, then cosines; fast to slow)", ylabel="timestep t")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def plot_loss_by_timestep(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Mean squared noise error against t, one line per model: (bin centres, mean error)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for label, (centres, error) in curves.items():
        ax.plot(centres, error, marker="o", markersize=3, label=label)
    ax.set(xlabel="timestep t", ylabel="mean ||eps - eps_theta||^2 per pixel", yscale="log")
    ax.legend()
    return fig


def plot_unet_diagram(model: torch.nn.Module):
    """SimpleUNet drawn from its own modules: the down path, the middle, the up path, the skips, and
    every residual block that receives the timestep embedding (marked t)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    def path_levels(layers, pixels, resize):
        """Group a path's residual blocks by resolution, [(pixels, [ResBlock, ...]), ...], reading its resizing layers."""
        levels = [(pixels, [])]
        for layer in layers:
            if isinstance(layer, ResBlock):
                levels[-1][1].append(layer)
            else:
                pixels = resize(pixels)
                levels.append((pixels, []))
        return levels

    down = path_levels(model.down, 28, lambda pixels: pixels // 2)
    up = path_levels(model.up, 7, lambda pixels: pixels * 2)
    row = {28: 2.0, 14: 1.0, 7: 0.0}

    fig, ax = plt.subplots(figsize=(10, 5.6), layout="constrained")
    ax.set(xlim=(-1.6, 9.6), ylim=(-1.75, 3.55))
    ax.axis("off")

    def box(x, y, text, color, width=2.6, height=0.62, time_input=False):
        ax.add_patch(
            FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04", facecolor=color, edgecolor="0.3")
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
        if time_input:  # the badge: this block adds the timestep embedding to its features
            ax.text(
                x + width / 2,
                y + height / 2,
                "t",
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                fontweight="bold",
                bbox=dict(boxstyle="circle,pad=0.2", facecolor="tab:orange", edgecolor="none"),
            )

    def arrow(start, end, text="", style="-|>", color="0.25", dashed=False):
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.3, linestyle="--" if dashed else "-"))
        if text:
            ax.text(
                (start[0] + end[0]) / 2 + 0.08,
                (start[1] + end[1]) / 2,
                text,
                fontsize=7.5,
                color=color,
                ha="left" if start[0] == end[0] else "center",
                va="center" if start[0] == end[0] else "bottom",
            )

    def widths(blocks):
        return " → ".join(str(block.conv1.out_channels) for block in blocks)

    x_down, x_up, x_mid = 1.0, 7.0, 4.0
    box(x_down, 3.1, f"x_t, 1×28×28\n→ conv_in → {model.conv_in.out_channels} ch", "0.93")
    box(x_up, 3.1, "→ conv_out →\nε̂ or v̂, 1×28×28", "0.93")
    arrow((x_down, 2.77), (x_down, 2.35))
    arrow((x_up, 2.35), (x_up, 2.77))
    for pixels, blocks in down:
        y = row[pixels]
        box(
            x_down,
            y,
            f"{len(blocks)} ResBlock{'s' * (len(blocks) > 1)}: {widths(blocks)} ch\n{pixels}×{pixels} pixels",
            "#dbe8f5",
            time_input=True,
        )
        if pixels > 7:
            arrow((x_down, y - 0.33), (x_down, y - 0.67), "stride-2 conv: half the size")
    for pixels, blocks in up:
        y = row[pixels]
        box(x_up, y, f"{len(blocks)} ResBlocks: {widths(blocks)} ch\n{pixels}×{pixels}, each with a skip", "#e3f1dc", time_input=True)
        if pixels < 28:
            arrow((x_up, y + 0.33), (x_up, y + 0.67), "upsample ×2")
        skips = len(blocks)
        arrow((x_down + 1.32, y), (x_up - 1.32, y), f"{skips} skip tensors (concatenated)", color="tab:blue", dashed=True)
    attention = isinstance(model.mid_attn, SelfAttention)
    c_mid = model.mid1.conv1.out_channels
    box(x_mid - 1.75, -1.2, f"ResBlock\n{c_mid} ch, 7×7", "#f3e3f3", width=1.6, time_input=True)
    box(x_mid, -1.2, "self-attention\nall 49 pixels" if attention else "(no attention)", "#f3e3f3" if attention else "0.95", width=1.6)
    box(x_mid + 1.75, -1.2, f"ResBlock\n{c_mid} ch, 7×7", "#f3e3f3", width=1.6, time_input=True)
    arrow((x_down, -0.33), (x_mid - 1.75, -0.88))
    arrow((x_mid - 0.93, -1.2), (x_mid - 0.82, -1.2))
    arrow((x_mid + 0.82, -1.2), (x_mid + 0.93, -1.2))
    arrow((x_mid + 1.75, -0.88), (x_up, -0.33))
    ax.text(
        x_mid,
        3.1,
        "t → sines and cosines → MLP → embedding,\nadded inside every block with an orange t",
        ha="center",
        va="center",
        fontsize=8.5,
        color="tab:orange",
    )
    ax.set_title(
        f"SimpleUNet, {sum(p.numel() for p in model.parameters()):,} parameters: down path (left), middle (bottom), up path (right)",
        fontsize=10,
    )
    return fig


# --- The diffusion model as a Markov chain (notebook 03) ---------------------------------------------------------


def plot_markov_chain(images: torch.Tensor, ts: Sequence[int], timesteps: int | None = None, posterior: bool = False):
    """The model as a chain of states x_0 -> ... -> x_T, each drawn with a real image.

    ``images`` (k, 1, H, W) in [-1, 1] hold x_t at the paper's timesteps ``ts``
    (k of them, increasing, 0 for the clean digit x_0). Between neighbours, an
    arrow to the right stands for the fixed forward process q, which adds noise,
    and an arrow to the left for the learned reverse process p_theta, which
    removes it. Neighbours one step apart get the conditionals as labels,
    q(x_t | x_{t-1}) and p_theta(x_{t-1} | x_t); with ``posterior`` the reverse
    label also names what training fits p_theta to, q(x_{t-1} | x_t, x_0)
    (for t >= 2: the step to x_0 is the bound's decoder term L_0, not a KL). A
    gap of several steps is drawn dashed, with "..." and its number of steps.
    A state at t = ``timesteps`` (T) is titled as the noise the chain ends in.

    The k image panels are the figure's axes labelled "state", in order.
    """
    import matplotlib.pyplot as plt

    ts = [int(t) for t in ts]
    if len(images) != len(ts):
        raise ValueError(f"plot_markov_chain needs one image per timestep: {len(images)} images for {len(ts)} timesteps")
    if not ts or ts[0] < 0 or any(b <= a for a, b in itertools.pairwise(ts)):
        raise ValueError(f"timesteps must be increasing and at least 0, got {ts}")
    forward, reverse = "C0", "C3"
    ratios = [1.0] + [r for _ in ts[1:] for r in (1.7, 1.0)]
    fig, axes = plt.subplots(1, len(ratios), figsize=(sum(ratios) * 1.05, 2.6), width_ratios=ratios, layout="constrained")
    axes = np.atleast_1d(axes)
    pictures = to_uint8(images)
    for k, t in enumerate(ts):
        ax = axes[2 * k]
        ax.imshow(pictures[k], cmap="gray", vmin=0, vmax=255)
        ax.set_title("$x_0$: data" if t == 0 else f"$x_{{{t}}}$" + (": noise" if t == timesteps else ""), fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_label("state")
    for k, (a, b) in enumerate(itertools.pairwise(ts)):
        ax = axes[2 * k + 1]
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.axis("off")
        one_step = b == a + 1
        style = "-" if one_step else (0, (4, 3))
        for y, (start, end), colour in ((0.62, (0.02, 0.98), forward), (0.38, (0.98, 0.02), reverse)):
            ax.annotate(
                "",
                xy=(end, y),
                xytext=(start, y),
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.6, linestyle=style, shrinkA=0, shrinkB=0),
            )
        if one_step:
            ax.text(0.5, 0.70, f"$q(x_{{{b}}} \\mid x_{{{a}}})$", color=forward, ha="center", va="bottom", fontsize=9)
            ax.text(0.5, 0.30, f"$p_\\theta(x_{{{a}}} \\mid x_{{{b}}})$", color=reverse, ha="center", va="top", fontsize=9)
            if posterior and a >= 1:
                ax.text(0.5, 0.12, f"fit to $q(x_{{{a}}} \\mid x_{{{b}}}, x_0)$", color="0.35", ha="center", va="top", fontsize=8)
        else:
            ax.text(0.5, 0.5, "$\\cdots$", ha="center", va="center", fontsize=14)
            ax.text(0.5, 0.70, f"{b - a} steps of $q$", color=forward, ha="center", va="bottom", fontsize=9)
            ax.text(0.5, 0.30, f"{b - a} steps of $p_\\theta$", color=reverse, ha="center", va="top", fontsize=9)
    fig.suptitle(
        "forward $q$: fixed, adds noise (left to right)    ·    reverse $p_\\theta$: learned, removes it (right to left)", fontsize=10
    )
    return fig


# ----- notebook 04: why guidance works, and a student's model beside the shipped one -----------------------


def plot_guidance_field(
    mixture,
    label: int,
    w: float,
    points: np.ndarray,
    class_names: Sequence[str] | None = None,
    extent: tuple[float, float, float, float] = (-4, 4, -3.5, 4),
    arrow: float = 1.4,
):
    """Classifier-free guidance on a 2-D Gaussian mixture (``mixture2d.GaussianMixture2D``), whose scores are exact.

    Left: the data density p(x) as contours over the regions where each class is the most
    likely one, and at each of ``points`` three arrows, head to tail: grad log p(x) (towards
    the data), from its tip w grad log p(y | x) (towards class ``label``: the classifier's
    gradient, times w), and from the point their sum, the guided direction
    grad log p(x) + w grad log p(y | x). The arrows at one point share a scale (the longest is
    ``arrow`` long), so they add up on the page; lengths are not compared between points.
    Right: the density guided sampling aims at, p(x) p(y | x)^w (normalised on the plotted
    window, one grey scale for all three), for w = 0, 1 and ``w``: w = 1 is p(x | y), and
    larger w piles the mass up further from the other classes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = list(class_names or [str(k) for k in range(len(mixture.means))])
    xs = np.linspace(extent[0], extent[1], 241)
    ys = np.linspace(extent[2], extent[3], 241)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    class_colours = [palette[k % len(palette)] for k in range(len(names))]

    fig, axes = plt.subplots(1, 4, figsize=(15, 4.9), layout="constrained", gridspec_kw={"width_ratios": [1.45, 1, 1, 1]})
    ax = axes[0]
    owner = mixture.class_posterior(grid).argmax(1).reshape(gx.shape)
    ax.imshow(owner, origin="lower", extent=extent, cmap=ListedColormap(class_colours), alpha=0.12, aspect="auto", interpolation="nearest")
    ax.contour(gx, gy, np.exp(mixture.log_prob(grid)).reshape(gx.shape), levels=6, colors="0.45", linewidths=0.7)
    for k, mean in enumerate(mixture.means):
        ax.annotate(f"class {names[k]}", mean, ha="center", va="center", fontsize=9, color=class_colours[k], weight="bold")
    points = np.asarray(points, dtype=np.float64)
    data_push = mixture.score(points)
    label_push = w * mixture.classifier_score(points, label)
    guided = mixture.guided_score(points, label, w)
    # Head to tail: the data's arrow from the point, w times the classifier's from its tip, and their sum, the
    # guided direction, from the point. The three arrows at a point share one scale (the longest is ``arrow``
    # plot units long), so they add up on the page; scores grow with the distance from the data, so each
    # point gets its own scale.
    per_point = np.maximum.reduce([np.linalg.norm(v, axis=1) for v in (data_push, label_push, guided)]) / arrow
    data_push, label_push, guided = (v / per_point[:, None] for v in (data_push, label_push, guided))
    arrows = [
        (points, data_push, "0.15", 0.005, r"$\nabla_x \log p(x)$: towards any data"),
        (
            points + data_push,
            label_push,
            "tab:red",
            0.005,
            rf"$w\,\nabla_x \log p(y{{=}}{names[label]} \mid x)$: the classifier's push, times $w$",
        ),
        (points, guided, "tab:blue", 0.008, rf"guided direction, their sum ($w = {w:g}$)"),
    ]
    for start, vectors, colour, width, text in arrows:
        ax.quiver(
            start[:, 0],
            start[:, 1],
            vectors[:, 0],
            vectors[:, 1],
            color=colour,
            angles="xy",
            scale_units="xy",
            scale=1,
            width=width,
            label=text,
            zorder=2 if colour == "tab:blue" else 3,
        )
    ax.plot(points[:, 0], points[:, 1], "k.", markersize=5)
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal", title=f"directions at a few points (y = class {names[label]})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))

    densities = []
    for weight in (0.0, 1.0, w):
        log_density = mixture.guided_log_density(grid, label, weight)
        density = np.exp(log_density - log_density.max())
        densities.append(density / (density.sum() * cell))
    levels = np.linspace(0, max(d.max() for d in densities), 13)[1:]
    for ax, weight, density in zip(axes[1:], (0.0, 1.0, w), densities):
        ax.contourf(gx, gy, density.reshape(gx.shape), levels=levels, cmap="Greys", extend="max")
        ax.contour(gx, gy, owner, levels=np.arange(len(names)) + 0.5, colors="0.6", linewidths=0.6, linestyles=":")
        for k, mean in enumerate(mixture.means):
            ax.plot(*mean, "+", color=class_colours[k], markersize=9, markeredgewidth=2)
        what = {0.0: "p(x): label ignored", 1.0: f"= p(x | y={names[label]})"}.get(weight, "sharper than p(x | y)")
        ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal", xticks=[], yticks=[])
        ax.set_title(rf"$p(x)\,p(y{{=}}{names[label]} \mid x)^{{{weight:g}}}$" + f"\n{what}", fontsize=10)
    return fig


def plot_model_rows(rows: dict[str, dict[str, torch.Tensor]], nrow: int = 10):
    """A table of digit grids: one row of panels per model (the outer keys, written on the left), one panel per
    setting (the inner keys, the panels' titles; e.g. "w = 2: 9 of 10 recognised").

    Every model needs the same number of panels; each is a batch (N, 1, H, W) in [-1, 1] tiled ``nrow`` digits wide.
    """
    import matplotlib.pyplot as plt

    columns = len(next(iter(rows.values())))
    if any(len(panels) != columns for panels in rows.values()):
        raise ValueError("every model needs the same number of panels")
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns + 0.6, 1.45 * len(rows) + 0.2), layout="constrained", squeeze=False)
    for r, (model_name, panels) in enumerate(rows.items()):
        for c, (setting, images) in enumerate(panels.items()):
            ax = axes[r, c]
            ax.imshow(grid_array(images, nrow), cmap="gray", vmin=0, vmax=255)
            ax.set_title(setting, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(model_name, fontsize=10)
    return fig
