"""Training a noise predictor: the loss of Ho et al. (2020), Algorithm 1, plus the engineering around it.

One step: pick digits x_0, a timestep t ~ U{1..T} and noise eps ~ N(0, I); form
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; regress the network's
eps_theta(x_t, t) onto eps with a mean-squared error.

A class-conditional model (``model.num_classes = 10``) also sees the digit's
label, replaced by the "no label" token with probability ``p_uncond`` so
that one network learns both eps(x_t, t, y) and eps(x_t, t, nothing), as
classifier-free guidance needs (Ho & Salimans 2022).

Around it: AdamW with a short warm-up, an exponential moving average (EMA) of
the weights that is used for every sample, mixed precision chosen by hardware,
a checkpoint after every epoch (written atomically, resumable bit-for-bit on
CPU) with the EMA weights beside it, a sample grid per epoch from fixed noise,
and the loss history on disk.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .schedule import SCHEDULES, NoiseSchedule
from .unet import SimpleUNet, UNetConfig

CHECKPOINT_FORMAT = "ddpm_lib.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
EMA_WEIGHTS_NAME = "ema.safetensors"  # just the averaged weights, for sampling and shipping
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100  # linear learning-rate warm-up from 0
    ema_decay: float = 0.999
    schedule: str = "linear"
    timesteps: int = 1000
    model: UNetConfig = field(default_factory=UNetConfig)
    p_uncond: float = 0.1  # conditional models: chance of hiding the label during training
    train_subset: int | None = None  # first N training digits; None = all 60,000
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # "auto" picks by hardware, see resolve_precision
    seed: int = 0
    out_dir: str = "runs/train"
    data_root: str | None = None  # None: $DDPM_MNIST_DATA or data/ in the repository
    grid_size: int = 64  # digits in each per-epoch grid
    grid_steps: int = 50  # DDIM steps used to draw those grids

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = UNetConfig(**self.model)
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("warmup_steps", self.warmup_steps >= 0, "0 or more"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("p_uncond", 0 <= self.p_uncond < 1, "in [0, 1)"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("timesteps", self.timesteps >= 2, "at least 2"),
            ("train_subset", self.train_subset is None or 1 <= self.train_subset <= 60_000, "None or 1..60000"),
            ("amp", self.amp in PRECISIONS, f"one of {PRECISIONS}"),
            ("grid_size", self.grid_size >= 1, "at least 1"),
            ("grid_steps", 1 <= self.grid_steps <= self.timesteps, f"between 1 and timesteps={self.timesteps}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    def architecture(self) -> dict:
        """The fields a checkpoint must share with this config to be loadable into it."""
        return {"model": asdict(self.model), "schedule": self.schedule, "timesteps": self.timesteps}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not ours, or for another architecture."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def resolve_precision(amp: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for this device.

    "auto": bf16 on GPUs of compute capability >= 8.0 (A100, H100, RTX 30xx+);
    fp16 with loss scaling below that (T4, V100), where bf16 is emulated and
    slow even when ``torch.cuda.is_bf16_supported()`` says yes; fp32 on CPU,
    where bf16 autocast measured slower for this model (see README, Benchmarks).
    """
    if amp != "auto":
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA GPU; use 'auto', 'fp32' or 'bf16' on CPU")
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    p_uncond: float = 0.0,
) -> torch.Tensor:
    """Algorithm 1: || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t[, y]) ||^2.

    With ``labels``, each is swapped for the model's "no label" token with probability ``p_uncond``.
    """
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = schedule.q_sample(x0, t, noise)
    if labels is None:
        return F.mse_loss(model(x_t, t).float(), noise)
    hide = torch.rand(labels.shape, device=labels.device, generator=generator) < p_uncond
    labels = torch.where(hide, torch.full_like(labels, model.null_label), labels)
    return F.mse_loss(model(x_t, t, labels).float(), noise)


@dataclass
class Optimizer:
    """What one training step updates: the weights' AdamW state, the fp16 loss scaler, and the EMA."""

    adamw: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: "EMA | None"


def training_step(
    model: nn.Module,
    schedule: NoiseSchedule,
    opt: Optimizer,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    config: "TrainConfig",
    step: int,
    generator: torch.Generator,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """One update: warm-up learning rate, loss under autocast, scaled backward, clipping, AdamW, EMA."""
    for group in opt.adamw.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
    with autocast(device, precision):
        loss = diffusion_loss(model, schedule, x0, generator, labels, config.p_uncond)
    opt.adamw.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.adamw)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.scaler.step(opt.adamw)
    opt.scaler.update()
    if opt.ema is not None:
        opt.ema.update(model, step)
    return loss.detach()


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with d ramped up early in training.

    The ramp d_k = min(decay, (1 + k) / (10 + k)) lets the average follow the
    fast-changing first steps instead of remembering the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)


@dataclass
class TrainResult:
    model: nn.Module  # the raw weights
    ema_model: nn.Module  # the averaged weights: sample with these
    schedule: NoiseSchedule
    losses: list[float]  # one per optimisation step, over all epochs including resumed ones
    epochs_done: int
    out_dir: Path
    precision: str
    device: torch.device


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def read_checkpoint(path: str | Path) -> dict:
    """Load and sanity-check a training checkpoint (weights only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read ({type(exc).__name__}); it is truncated or not a checkpoint. "
            f"If an interrupted run wrote it, delete it and start again, or point at another checkpoint."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ddpm_lib training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def check_compatible(ckpt_config: dict, config: TrainConfig, path) -> None:
    theirs = TrainConfig(**{**_config_kwargs(ckpt_config), "epochs": 1}).architecture()
    ours = config.architecture()
    if theirs != ours:
        diffs = [f"{k}: checkpoint {theirs[k]} vs requested {ours[k]}" for k in ours if theirs[k] != ours[k]]
        raise CheckpointError(
            f"{path} was trained with another configuration ({'; '.join(diffs)}). "
            f"Use the checkpoint's settings, or a fresh out_dir for the new ones."
        )


def _config_kwargs(saved: dict) -> dict:
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in saved.items() if k in known}


def config_from_checkpoint(ckpt: dict) -> TrainConfig:
    return TrainConfig(**_config_kwargs(ckpt["config"]))


def build_model(config: TrainConfig, device: torch.device) -> SimpleUNet:
    # channels_last measured faster on CPU (see README, Benchmarks) and suits tensor cores.
    return SimpleUNet(config.model).to(device, memory_format=torch.channels_last)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train for ``config.epochs`` epochs in total, writing everything to ``config.out_dir``.

    With ``resume=True`` an existing checkpoint there is continued (an epoch
    count beyond the checkpoint's extends the run); without it, an existing
    checkpoint is refused rather than overwritten.
    """
    from tqdm.auto import tqdm

    from .data import load_mnist
    from .plots import save_grid
    from .pretrained import save_weights
    from .sampling import Guidance, balanced_labels, ddim_sample

    out_dir = Path(config.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    device = resolve_device(config.device)
    precision = resolve_precision(config.amp, device)

    torch.manual_seed(config.seed)
    model = build_model(config, device)
    ema = EMA(model, config.ema_decay)
    schedule = NoiseSchedule(config.schedule, config.timesteps).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    opt = Optimizer(optimizer, scaler, ema)
    noise_gen = torch.Generator(device).manual_seed(config.seed)
    step, start_epoch, losses = 0, 0, []

    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(
                f"{ckpt_path} already exists. Pass resume=True (CLI: --resume) to continue that run, "
                f"or choose another out_dir; nothing was overwritten."
            )
        ckpt = read_checkpoint(ckpt_path)
        check_compatible(ckpt["config"], config, ckpt_path)
        model.load_state_dict(ckpt["model"])
        ema.model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        noise_gen.set_state(ckpt["rng"]["noise"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, start_epoch, losses = ckpt["step"], ckpt["epoch"], ckpt["losses"].tolist()
    out_dir.mkdir(parents=True, exist_ok=True)

    images, labels = load_mnist(config.data_root, train=True, subset=config.train_subset)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    labels = labels.to(device) if config.model.num_classes else None
    n = images.shape[0]
    batches = math.ceil(n / config.batch_size)

    for epoch in range(start_epoch, config.epochs):
        model.train()
        # The order depends only on (seed, epoch), so a resumed run sees the same batches.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)).to(device)
        bar = tqdm(range(batches), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=True)
        pending = []  # losses still on the device: reading each one at once would stall a GPU every step
        for b in bar:
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            loss = training_step(
                model, schedule, opt, images[idx], None if labels is None else labels[idx],
                config, step, noise_gen, device, precision,
            )
            step += 1
            pending.append(loss)
            if b % 20 == 0 or b == batches - 1:
                losses.extend(torch.stack(pending).tolist())
                pending = []
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
        bar.close()

        # Conditional runs draw rows of 0..9 with the plain conditional model (w = 1).
        guidance = Guidance(balanced_labels(config.grid_size)) if config.model.num_classes else None
        with autocast(device, precision):
            grid = ddim_sample(ema.model, schedule, config.grid_size, steps=config.grid_steps, seed=config.seed, guidance=guidance).images
        save_grid(grid, out_dir / f"epoch_{epoch + 1:03d}.png", nrow=10 if guidance else None)
        _write_losses(out_dir / "loss_history.csv", losses, batches)
        _atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": asdict(config),
                "model": model.state_dict(),
                "ema": ema.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": epoch + 1,
                "losses": torch.tensor(losses),
                "rng": {"noise": noise_gen.get_state(), "torch": torch.get_rng_state()},
            },
            ckpt_path,
        )
        save_weights(ema.model.state_dict(), out_dir / EMA_WEIGHTS_NAME, asdict(config))
    return TrainResult(model, ema.model, schedule, losses, config.epochs, out_dir, precision, device)


def _write_losses(path: Path, losses: list[float], steps_per_epoch: int):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", "loss"])
        for i, loss in enumerate(losses):
            writer.writerow([i + 1, i // steps_per_epoch + 1, f"{loss:.6f}"])


def load_checkpoint(path: str | Path, device: str = "auto", ema: bool = True) -> tuple[SimpleUNet, NoiseSchedule, TrainConfig]:
    """The (EMA by default) model of a training checkpoint, its schedule and config, ready to sample."""
    ckpt = read_checkpoint(path)
    config = config_from_checkpoint(ckpt)
    dev = resolve_device(device)
    model = build_model(config, dev)
    try:
        model.load_state_dict(ckpt["ema" if ema else "model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model its config describes ({exc})") from exc
    return model.eval(), NoiseSchedule(config.schedule, config.timesteps).to(dev), config
