"""TrainConfig: every setting of a training run in one dataclass, checked when it is made.

A checkpoint stores this config, so a run can be resumed, sampled or compared
with another from its folder alone. The defaults train what the shipped weights
learned (the v target, the cosine noise schedule, min-SNR-5) at a batch size and
a constant learning rate that suit a run of open length; notebook 02's CPU recipe
for a fixed three epochs (batch 64, lr 4e-3, cosine decay) measured faster there
(assets/measurements/RECIPE.md). Each field's help says what it does and why it
has its value; the command line makes its ``train`` flags from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .constants import (
    ADAPTIVE_THREADS,
    LR_SCHEDULES,
    PRECISIONS,
    PREDICTIONS,
    TRAINING_DIGITS,
    WEIGHTINGS,
    LearningRateSchedule,
    LossWeighting,
    Precision,
    PredictionTarget,
)
from .objective import MIN_SNR_GAMMA, Objective
from .schedule import SCHEDULE_REGISTRY, ScheduleName
from .unet import UNetConfig

# The meaning of weights whose saved config lacks these keys: the versions that wrote no prediction
# target could only train eps on the linear schedule, so a default of TrainConfig must not stand in.
UNRECORDED_MEANS = {"prediction": "eps", "schedule": "linear"}


def setting(default, help: str, **metadata):
    """A field of TrainConfig with what it means beside it (``train --help`` shows ``help``); ``choices``
    names the registry its value comes from, read when the flags are made, so a later registration counts."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    epochs: int = setting(3, "passes over the training digits, those of a resumed run included")
    batch_size: int = setting(128, "digits per optimisation step; every step sees a full batch (an epoch's remainder is skipped)")
    lr: float = setting(2e-3, "AdamW's peak learning rate")
    warmup_steps: int = setting(100, "steps of linear warm-up from 0: Adam's first moment estimates are noisy")
    lr_schedule: LearningRateSchedule = setting(
        "constant", "after the warm-up: constant, or a cosine decay towards 0 over the planned steps"
    )
    grad_clip: float = setting(1.0, "largest gradient norm; guards the first steps, where the loss is far from its minimum")
    ema_decay: float = setting(0.999, "the sampled weights average the last ~1 / (1 - decay) steps")
    ema_warmup: int = setting(10, "the averaging starts at decay 1 / ema_warmup and ramps up: d_k = min(decay, (1 + k) / (ema_warmup + k))")
    schedule: ScheduleName = setting(
        "cosine", "noise schedule, a name in schedule.SCHEDULE_REGISTRY; RECIPE.md compares cosine and linear", choices=SCHEDULE_REGISTRY
    )
    timesteps: int = setting(1000, "T, the number of noise levels")
    prediction: PredictionTarget = setting("v", "the network's target: v (Salimans & Ho) or the noise eps (Ho et al.); see objective.py")
    loss_weighting: LossWeighting = setting("min_snr", "min_snr (Hang et al. 2023) or uniform (L_simple); see objective.py")
    min_snr_gamma: float = setting(MIN_SNR_GAMMA, "gamma of min-SNR: a timestep's weight is capped at gamma / SNR(t)")
    model: UNetConfig = field(default_factory=UNetConfig, metadata={"help": "the network: widths, attention, number of labels"})
    p_uncond: float = setting(0.1, "conditional models: the chance that training replaces a digit's label by the null label")
    train_subset: int | None = setting(None, "train on the first N training digits; None: all 60,000")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...")
    amp: Precision = setting("auto", "mixed precision; auto picks by hardware (device.resolve_precision)")
    cuda_graphs: bool = setting(True, "on a GPU, replay each training step as one CUDA graph (the plain step if capture fails)")
    cpu_threads: int | str | None = setting(
        None,
        "torch's CPU threads. None: its count at the start, kept for the whole run (a seed gives the same run whatever else the "
        f"machine does); N: exactly N; {ADAPTIVE_THREADS!r}: one fewer while other processes crowd the cores, faster beside them "
        "but no longer reproducible (device.CpuThreads)",
    )
    seed: int = setting(0, "seeds the initial weights, the order of the digits and the noise")
    out_dir: str = setting("runs/train", "run folder: checkpoint.pt, ema.safetensors, epoch_NNN.png, loss_history.csv")
    data_root: str | None = setting(None, "the folder MNIST is in; None: $DDPM_MNIST_DATA, or data/ in the repository")
    grid_size: int = setting(64, "digits in each per-epoch grid")
    grid_steps: int = setting(50, "DDIM steps that draw those grids")

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = UNetConfig(**self.model)
        checks = [
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, "a whole number, at least 1"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "a whole number, at least 1"),
            ("lr", _is_positive(self.lr), "a positive number"),
            ("warmup_steps", _is_int(self.warmup_steps) and self.warmup_steps >= 0, "a whole number, 0 or more"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            ("grad_clip", _is_positive(self.grad_clip), "a positive number"),
            ("ema_decay", _is_number(self.ema_decay) and 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("ema_warmup", _is_int(self.ema_warmup) and self.ema_warmup >= 1, "a whole number, at least 1"),
            ("schedule", self.schedule in SCHEDULE_REGISTRY, f"one of {tuple(SCHEDULE_REGISTRY)}"),
            # The upper bound stops a crafted weights file from asking the schedule for gigabytes.
            ("timesteps", _is_int(self.timesteps) and 2 <= self.timesteps <= 100_000, "a whole number from 2 to 100,000"),
            ("prediction", self.prediction in PREDICTIONS, f"one of {PREDICTIONS}"),
            ("loss_weighting", self.loss_weighting in WEIGHTINGS, f"one of {WEIGHTINGS}"),
            ("min_snr_gamma", _is_positive(self.min_snr_gamma), "a positive number"),
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
        they could only be Ho et al.'s (``UNRECORDED_MEANS``), whatever the defaults are."""
        known = {f.name for f in fields(cls)}
        return cls(**{**UNRECORDED_MEANS, **{k: v for k, v in saved.items() if k in known}})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return _is_number(value) and 0 < value < math.inf  # nan is neither
