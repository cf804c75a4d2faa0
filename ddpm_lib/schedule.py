"""The noise schedule of a DDPM and the closed forms that follow from it.

Everything here is math on a fixed sequence beta_1 .. beta_T; there are no
learned parameters. Notation follows Ho et al. (2020), "Denoising Diffusion
Probabilistic Models", and Nichol & Dhariwal (2021) for the cosine schedule.

Indexing: the paper counts timesteps t = 1 .. T. Python counts from zero, so
row ``i`` of every tensor below holds the paper's t = i + 1. A timestep tensor
``t`` passed to any method is in code indexing, 0 .. T-1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, max_beta: float = 0.999) -> torch.Tensor:
    """beta_t rising linearly, as in Ho et al. (2020) with T = 1000."""
    # The paper's end points are for T = 1000; rescaling keeps the total noise
    # comparable when a reader experiments with fewer steps. Below T = 21 the
    # rescaled end point would reach 1 (alpha_t <= 0), hence the clamp.
    scale = 1000 / timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64).clamp(max=max_beta)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """beta_t such that alpha_bar_t follows cos^2, Nichol & Dhariwal (2021), eq. 17."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    # Clipping beta near t = T avoids a singularity where alpha_bar reaches 0.
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class ScheduleKind:
    """A noise schedule as the rest of the library sees it.

    name: the spelling users type (``NoiseSchedule(name)``, ``--schedule``, the notebooks' menus);
    label: how pictures and captions write it; betas: the function of T giving beta_1 .. beta_T in float64.
    Calling the entry calls ``betas``.
    """

    name: ScheduleName
    label: str
    betas: Callable[[int], torch.Tensor]

    def __call__(self, timesteps: int) -> torch.Tensor:
        return self.betas(timesteps)


# A key of SCHEDULE_REGISTRY. Not a Literal: the registry is open, and a schedule registered later is as valid.
ScheduleName = str

# Every schedule by name, in the order menus list them: a schedule registered here is offered everywhere else.
SCHEDULE_REGISTRY: dict[ScheduleName, ScheduleKind] = {}


def register_schedule(name: ScheduleName, betas: Callable[[int], torch.Tensor], label: str) -> ScheduleKind:
    """Offer the schedule ``betas`` (T -> beta_1 .. beta_T, float64) as ``name``; a taken name is refused."""
    if name in SCHEDULE_REGISTRY:
        raise ValueError(f"a schedule named {name!r} is already registered")
    SCHEDULE_REGISTRY[name] = ScheduleKind(name, label, betas)
    return SCHEDULE_REGISTRY[name]


register_schedule("linear", linear_betas, "linear (Ho et al. 2020)")
register_schedule("cosine", cosine_betas, "cosine (Nichol & Dhariwal 2021)")


class NoiseSchedule(nn.Module):
    """Precomputed schedule tensors of length T, each named after its symbol.

    ``kind`` names the schedule in ``SCHEDULE_REGISTRY``. It is an
    ``nn.Module`` only so that ``schedule.to(device)`` moves every tensor
    along with the model; it has no parameters.
    """

    def __init__(self, kind: ScheduleName = "linear", timesteps: int = 1000):
        super().__init__()
        if kind not in SCHEDULE_REGISTRY:
            raise ValueError(f"schedule must be one of {tuple(SCHEDULE_REGISTRY)}, got {kind!r}")
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        self.kind = kind
        self.label = SCHEDULE_REGISTRY[kind].label  # how pictures and captions name the schedule
        self.timesteps = timesteps

        # Computed in float64, stored in float32: the running product over
        # 1000 steps loses digits in float32.
        betas = SCHEDULE_REGISTRY[kind].betas(timesteps)  # beta_t
        alphas = 1 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])

        tensors = {
            "betas": betas,  # beta_t
            "alphas": alphas,  # alpha_t = 1 - beta_t
            "alpha_bars": alpha_bars,  # alpha_bar_t = prod_{s<=t} alpha_s
            "alpha_bars_prev": alpha_bars_prev,  # alpha_bar_{t-1}, with alpha_bar_0 = 1
            "sqrt_alpha_bars": alpha_bars.sqrt(),  # sqrt(alpha_bar_t)
            "sqrt_one_minus_alpha_bars": (1 - alpha_bars).sqrt(),  # sqrt(1 - alpha_bar_t)
            # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, eq. 7
            "posterior_variance": (1 - alpha_bars_prev) / (1 - alpha_bars) * betas,
            # mu_tilde_t = coef_x0 * x_0 + coef_xt * x_t, eq. 7
            "posterior_mean_coef_x0": alpha_bars_prev.sqrt() * betas / (1 - alpha_bars),
            "posterior_mean_coef_xt": alphas.sqrt() * (1 - alpha_bars_prev) / (1 - alpha_bars),
            "snr": alpha_bars / (1 - alpha_bars),  # SNR(t) = alpha_bar_t / (1 - alpha_bar_t)
        }
        for name, value in tensors.items():
            self.register_buffer(name, value.float(), persistent=False)

    @staticmethod
    def at_timesteps(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] for a batch of timesteps t, shaped to broadcast against a batch like ``like`` (B, C, H, W),
        on its device and in its dtype: ``schedule.at_timesteps(schedule.sqrt_alpha_bars, t, x0) * x0``."""
        out = values.to(like.device)[t.to(like.device)]
        return out.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), eq. 4."""
        return self.at_timesteps(self.sqrt_alpha_bars, t, x0) * x0 + self.at_timesteps(self.sqrt_one_minus_alpha_bars, t, x0) * noise

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One forward step: x_t ~ q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), eq. 2."""
        return self.at_timesteps(self.alphas, t, x_prev).sqrt() * x_prev + self.at_timesteps(self.betas, t, x_prev).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4 for x_0 given the noise: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return (x_t - self.at_timesteps(self.sqrt_one_minus_alpha_bars, t, x_t) * noise) / self.at_timesteps(self.sqrt_alpha_bars, t, x_t)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4 for the noise given x_0: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        return (x_t - self.at_timesteps(self.sqrt_alpha_bars, t, x_t) * x0) / self.at_timesteps(self.sqrt_one_minus_alpha_bars, t, x_t)

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0), eqs. 6-7."""
        mean = self.at_timesteps(self.posterior_mean_coef_x0, t, x_t) * x0 + self.at_timesteps(self.posterior_mean_coef_xt, t, x_t) * x_t
        return mean, self.at_timesteps(self.posterior_variance, t, x_t)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, timesteps={self.timesteps}"
