"""The training objective: what the network is asked to output, and how much each timestep counts.

Ho et al. (2020) train on L_simple: draw x_0, a timestep t and noise eps, form
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, and regress the
network's output onto eps with a plain mean-squared error, every t weighted
alike. Notebook 02 derives it from the variational bound. Two refinements from
the literature are options here, because the recipe was chosen by measuring
them (assets/measurements/RECIPE.md):

- the target ("prediction"): eps (Ho et al.), or the velocity
  v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022);
- the weighting: uniform (L_simple), or min-SNR-gamma (Hang et al. 2023), which
  caps the weight of the nearly clean timesteps, whose signal-to-noise ratio
  SNR(t) = alpha_bar_t / (1 - alpha_bar_t) is large, at gamma / SNR(t).

Whatever the target, the samplers see a noise predictor: ``noise_predictor``
wraps a v-network so that it answers with eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .constants import PREDICTIONS, WEIGHTINGS, LossWeighting, PredictionTarget
from .device import model_device
from .schedule import NoiseSchedule

MIN_SNR_GAMMA = 5.0  # gamma of min-SNR: Hang et al. found 5 robust


@dataclass(frozen=True)
class Objective:
    """What the network is asked to output, and how much each timestep's error counts.

    ``Objective()`` is Ho et al.'s L_simple (eps, every t alike), the loss notebook 02 derives from
    the bound. The recipe this project trains with is ``TrainConfig``'s, the one place that says it
    (``TrainConfig().objective()``: v and min-SNR, chosen by measurement in RECIPE.md).
    """

    prediction: PredictionTarget = "eps"  # what the network outputs: "eps" or "v"
    weighting: LossWeighting = "uniform"  # "uniform": L_simple; "min_snr": min(SNR(t), gamma) / SNR(t) in eps terms
    min_snr_gamma: float = MIN_SNR_GAMMA

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")

    def loss_label(self) -> str:
        """What the training loss measures, for a plot's axis (matplotlib math)."""
        if self.weighting == "min_snr":  # the same quantity for either target, counted in eps terms (see weight)
            return rf"$\min(\mathrm{{SNR}}_t, {self.min_snr_gamma:g})\,/\,\mathrm{{SNR}}_t \cdot \|\epsilon - \epsilon_\theta\|^2$"
        return r"$\|\epsilon - \epsilon_\theta\|^2$" if self.prediction == "eps" else r"$\|v - v_\theta\|^2$"

    def target(self, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return noise
        # v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
        return (
            schedule.at_timesteps(schedule.sqrt_alpha_bars, t, x0) * noise
            - schedule.at_timesteps(schedule.sqrt_one_minus_alpha_bars, t, x0) * x0
        )

    def weight(self, schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weight of the squared error, shape (B,)."""
        if self.weighting == "uniform":
            return torch.ones(t.shape, device=t.device)
        snr = schedule.snr.to(t.device)[t]
        capped = snr.clamp(max=self.min_snr_gamma)
        # For a v target, ||v - v_theta||^2 = (SNR + 1) / SNR * ||eps - eps_theta||^2, so to weigh by
        # min(SNR, gamma) / SNR in eps terms the v error is multiplied by min(SNR, gamma) / (SNR + 1).
        return capped / snr if self.prediction == "eps" else capped / (snr + 1)


def draw_training_inputs(
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: int,
    generator: torch.Generator,
    p_uncond: float = 0.0,
    null_label: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random part of one step of Algorithm 1: t ~ U{1..T} (code: 0..T-1), eps ~ N(0, I), hidden labels.

    A conditional model's labels are each swapped for its null label with probability
    ``p_uncond`` (Ho & Salimans's symbol), so one network learns eps(x_t, t, y) and eps(x_t, t, null).
    """
    t = torch.randint(0, timesteps, (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    if labels is not None:
        hide = torch.rand(labels.shape, device=labels.device, generator=generator) < p_uncond
        labels = torch.where(hide, torch.full_like(labels, null_label), labels)
    return t, noise, labels


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor | None = None,
    objective: Objective = Objective(),
) -> torch.Tensor:
    """L_simple and its refinements: mean over the batch of w(t) || target - network(x_t, t[, y]) ||^2."""
    x_t = schedule.q_sample(x0, t, noise)
    output = model(x_t, t) if labels is None else model(x_t, t, labels)
    per_sample = (output.float() - objective.target(schedule, x0, t, noise)).pow(2).mean(dim=(1, 2, 3))
    return (objective.weight(schedule, t) * per_sample).mean()


class NoiseFromVelocity(nn.Module):
    """A v-predicting network seen as a noise predictor: eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""

    def __init__(self, network: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.network = network
        self.schedule = schedule

    def __getattr__(self, name: str):
        """Anything else (``config``, ``conditional``, ``label_emb``, ...) is the wrapped network's: the wrapper
        changes what the network's output means, not what the network is."""
        try:
            return super().__getattr__(name)  # the wrapper's own submodules: ``network``
        except AttributeError:
            if name == "network":  # not set yet (while copying or unpickling): no network to ask
                raise
            return getattr(self.network, name)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        v = self.network(x_t, t, labels).float()
        s = self.schedule
        return s.at_timesteps(s.sqrt_one_minus_alpha_bars, t, x_t) * x_t + s.at_timesteps(s.sqrt_alpha_bars, t, x_t) * v


def noise_predictor(network: nn.Module, schedule: NoiseSchedule, prediction: PredictionTarget) -> nn.Module:
    """What the samplers call eps_theta: the network itself, or the network behind the v-to-eps conversion."""
    return network if prediction == "eps" else NoiseFromVelocity(network, schedule)


@torch.no_grad()
def noise_error_by_timestep(
    noise_model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, bins: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ||eps - eps_theta(x_t, t)||^2 per pixel for the digits ``x0`` at ``bins`` evenly spaced t.

    ``noise_model`` is what the samplers call (``noise_predictor``), so models trained with any target
    are compared in the same units. Returns the paper's t of each bin and the mean error there.
    """
    generator = torch.Generator().manual_seed(seed)
    device = model_device(noise_model)
    timesteps = torch.linspace(0, schedule.timesteps - 1, bins).round().long()
    errors = []
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=generator).to(device)  # drawn on the CPU: the same on any device
        t_batch = torch.full((len(x0),), int(t), dtype=torch.long, device=device)
        x_t = schedule.q_sample(x0.to(device), t_batch, noise)
        errors.append((noise_model(x_t, t_batch).float() - noise).pow(2).mean().cpu())
    return timesteps + 1, torch.stack(errors)
