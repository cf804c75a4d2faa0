"""TrainConfig: every setting of a training run in one dataclass, checked when it is made.

A checkpoint stores this config, so a run can be resumed, sampled or compared
with another from its folder alone. The defaults train what the shipped weights
learned (the v target, the cosine noise schedule, min-SNR-5) at a batch size and
a constant learning rate that suit a run of open length; notebook 02's CPU recipe
for a fixed three epochs (batch 64, lr 4e-3, cosine decay) measured faster there
(assets/measurements/RECIPE.md). Each field says what it does and why it has its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .data import TRAINING_DIGITS
from .device import ADAPTIVE_THREADS, PRECISIONS
from .objective import PREDICTIONS, WEIGHTINGS, Objective
from .schedule import SCHEDULE_REGISTRY
from .unet import UNetConfig

LR_SCHEDULES = ("constant", "cosine")

# Sampling settings shared by the command line, the evaluation and the explorers.
SAMPLING_BATCH = 500  # digits drawn at once, bounding memory whatever n; batch k uses seed + k, so it also decides the digits a seed gives
DEFAULT_GUIDANCE = 2.0  # w for conditional sampling: the smallest that made every digit >= 98% recognisable (MODEL_CARD_conditional.md)


# What a saved config without these keys was trained with: versions that recorded no prediction target
# predicted eps, and their schedule was linear (today's defaults are v and cosine: RECIPE.md).
UNRECORDED_MEANS = {"prediction": "eps", "schedule": "linear"}


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128  # digits per optimisation step; every step sees a full batch (the remainder of an epoch is skipped)
    lr: float = 2e-3  # AdamW's peak learning rate
    warmup_steps: int = 100  # linear warm-up from 0: Adam's first moment estimates are noisy
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay towards 0 over the planned steps
    grad_clip: float = 1.0  # largest gradient norm; guards the first steps, where the loss is far from its minimum
    ema_decay: float = 0.999  # the sampled weights average the last ~1 / (1 - decay) steps
    ema_warmup: int = 10  # the decay starts at 1 / ema_warmup and ramps up: d_k = min(decay, (1 + k) / (ema_warmup + k))
    schedule: str = "cosine"  # noise schedule: "cosine" (Nichol & Dhariwal) or "linear" (Ho et al.); see schedule.py and RECIPE.md
    timesteps: int = 1000
    prediction: str = "v"  # the network's target: "v" (Salimans & Ho) or "eps" (Ho et al.); see objective.py and RECIPE.md
    loss_weighting: str = "min_snr"  # "min_snr" (Hang et al. 2023) or "uniform" (L_simple); see objective.py
    min_snr_gamma: float = 5.0
    model: UNetConfig = field(default_factory=UNetConfig)
    p_uncond: float = 0.1  # conditional models: chance of hiding the label during training
    train_subset: int | None = None  # first N training digits; None = all 60,000
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # "auto" picks by hardware, see device.resolve_precision
    cuda_graphs: bool = True  # on a GPU, replay each training step as one CUDA graph (falls back if capture fails)
    # None: torch's count at the start, kept for the whole run (the same seed gives the same run whatever else the machine does);
    # N: exactly N; "adaptive": one fewer while other processes crowd the cores, faster beside them but no longer reproducible (device.CpuThreads)
    cpu_threads: int | str | None = None
    seed: int = 0
    out_dir: str = "runs/train"
    data_root: str | None = None  # None: $DDPM_MNIST_DATA or data/ in the repository
    grid_size: int = 64  # digits in each per-epoch grid
    grid_steps: int = 50  # DDIM steps used to draw those grids

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = UNetConfig(**self.model)
        checks = [
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, "a whole number, at least 1"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "a whole number, at least 1"),
            ("lr", _is_number(self.lr) and self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("warmup_steps", _is_int(self.warmup_steps) and self.warmup_steps >= 0, "a whole number, 0 or more"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            ("grad_clip", _is_number(self.grad_clip) and self.grad_clip > 0, "a positive number"),
            ("ema_decay", _is_number(self.ema_decay) and 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("ema_warmup", _is_int(self.ema_warmup) and self.ema_warmup >= 1, "a whole number, at least 1"),
            ("schedule", self.schedule in SCHEDULE_REGISTRY, f"one of {tuple(SCHEDULE_REGISTRY)}"),
            # The upper bound stops a crafted weights file from asking the schedule for gigabytes.
            ("timesteps", _is_int(self.timesteps) and 2 <= self.timesteps <= 100_000, "a whole number from 2 to 100,000"),
            ("prediction", self.prediction in PREDICTIONS, f"one of {PREDICTIONS}"),
            ("loss_weighting", self.loss_weighting in WEIGHTINGS, f"one of {WEIGHTINGS}"),
            ("min_snr_gamma", _is_number(self.min_snr_gamma) and self.min_snr_gamma > 0, "a positive number"),
            ("p_uncond", _is_number(self.p_uncond) and 0 <= self.p_uncond < 1, "in [0, 1)"),
            (
                "train_subset",
                self.train_subset is None or (_is_int(self.train_subset) and 1 <= self.train_subset <= TRAINING_DIGITS),
                f"None or 1..{TRAINING_DIGITS}",
            ),
            ("amp", self.amp in PRECISIONS, f"one of {PRECISIONS}"),
            ("cuda_graphs", isinstance(self.cuda_graphs, bool), "True or False"),
            (
                "cpu_threads",
                self.cpu_threads in (None, ADAPTIVE_THREADS) or (_is_int(self.cpu_threads) and self.cpu_threads >= 1),
                f"None, {ADAPTIVE_THREADS!r} or a whole number, at least 1",
            ),
            ("grid_size", _is_int(self.grid_size) and self.grid_size >= 1, "a whole number, at least 1"),
            (
                "grid_steps",
                _is_int(self.grid_steps) and 1 <= self.grid_steps <= self.timesteps,
                f"between 1 and timesteps={self.timesteps}",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if self.batch_size > (self.train_subset or TRAINING_DIGITS):
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed the number of training digits ({self.train_subset or TRAINING_DIGITS})"
            )

    def objective(self) -> Objective:
        return Objective(self.prediction, self.loss_weighting, self.min_snr_gamma)

    @classmethod
    def from_saved(cls, saved: dict) -> TrainConfig:
        """A config stored by an older or newer version: unknown keys are dropped, missing ones take defaults,
        except the settings that say what the weights mean: a file that does not record them was written when
        they could only be Ho et al.'s (``UNRECORDED_MEANS``), whatever today's default is."""
        known = {f.name for f in fields(cls)}
        return cls(**{**UNRECORDED_MEANS, **{k: v for k, v in saved.items() if k in known}})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
