"""Reverse processes: turn Gaussian noise into digits with a trained noise predictor.

Two samplers share one idea. At each step the network predicts the noise
eps in x_t; from it follows a guess of the clean image,
x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), and the next,
less noisy x is built from x0_hat and eps.

- DDPM (Ho et al. 2020, Algorithm 2) visits all T timesteps and samples
  x_{t-1} from the posterior q(x_{t-1} | x_t, x0_hat), which adds fresh noise.
- DDIM (Song et al. 2021, eq. 12) may skip timesteps; with eta = 0 it adds no
  noise at all, with eta = 1 it has the same step variance as DDPM.

Both loops are written out in full below so they can be read against the papers.
Everything else (``sample``, the command line, the notebooks' explorers, the
labels of reports and plots) finds them by name in ``SAMPLER_REGISTRY``, so a
new sampler is one ``register_sampler`` call away from being offered everywhere.

A class-conditional model can be steered by classifier-free guidance
(Ho & Salimans 2022): ask the network for its noise guess with the label and
without it, and step along the difference,

    eps_guided = eps(x_t, nothing) + w * (eps(x_t, y) - eps(x_t, nothing)),

so w = 0 ignores the label, w = 1 is the plain conditional model and w > 1
exaggerates what makes a y a y (sharper digits, less variety). The paper
writes the same rule with w' = w - 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .config import SAMPLING_BATCH
from .schedule import NoiseSchedule


@dataclass
class Trajectory:
    """What the sampler saw at each visited step, oldest (t = T) first.

    timesteps: code-indexed t of each row; x_t: the input at that step;
    x0_pred and noise_pred: the network's guesses made from it. Tensors are on
    the CPU with shape (steps, n, 1, 28, 28).
    """

    timesteps: list[int]
    x_t: torch.Tensor
    x0_pred: torch.Tensor
    noise_pred: torch.Tensor


@dataclass
class SampleResult:
    images: torch.Tensor  # (n, 1, 28, 28) in [-1, 1]
    trajectory: Trajectory | None = None


class _Recorder:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.rows: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, t: int, x_t, x0_pred, noise_pred):
        if self.enabled:
            self.rows.append((t, x_t.float().cpu(), x0_pred.float().cpu(), noise_pred.float().cpu()))

    def result(self, images: torch.Tensor) -> SampleResult:
        if not self.enabled:
            return SampleResult(images)
        t, x, x0, eps = zip(*self.rows)
        return SampleResult(images, Trajectory(list(t), torch.stack(x), torch.stack(x0), torch.stack(eps)))


@dataclass(frozen=True)
class Guidance:
    """Which digit to draw (one label per sample) and how hard to insist: w as in the module docstring."""

    labels: torch.Tensor
    weight: float = 1.0

    def __post_init__(self):
        if not self.weight >= 0:  # also refuses NaN
            raise ValueError(f"guidance weight must be >= 0 (0: ignore the label, 1: plain conditional), got {self.weight}")


def guided_noise(model: nn.Module, x_t: torch.Tensor, t_batch: torch.Tensor, guidance: Guidance | None) -> torch.Tensor:
    """eps_theta(x_t, t), or with guidance eps(x_t, nothing) + w (eps(x_t, y) - eps(x_t, nothing))."""
    if guidance is None:
        return model(x_t, t_batch).float()
    if not getattr(model, "conditional", False):
        raise ValueError("guidance needs a class-conditional model (trained with --conditional)")
    labels = guidance.labels.to(x_t.device)
    if len(labels) != len(x_t):
        raise ValueError(f"guidance has {len(labels)} labels for {len(x_t)} samples")
    w = guidance.weight
    nothing = torch.full_like(labels, model.null_label)
    if w == 0:
        return model(x_t, t_batch, nothing).float()
    if w == 1:
        return model(x_t, t_batch, labels).float()
    # One batch of 2n instead of two calls: the same arithmetic, half the launches.
    both = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([labels, nothing])).float()
    eps_label, eps_nothing = both.chunk(2)
    return eps_nothing + w * (eps_label - eps_nothing)


def predict(model: nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor, t: int, clip_x0: bool, guidance: Guidance | None = None):
    """The network's noise guess at step t, and the clean image it implies.

    With ``clip_x0`` the image guess is clamped to the data range [-1, 1] and
    the noise guess recomputed to agree with it, a standard stabiliser.
    """
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    noise_pred = guided_noise(model, x_t, t_batch, guidance)
    x0_pred = schedule.predict_x0(x_t, t_batch, noise_pred)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
        noise_pred = schedule.predict_noise(x_t, t_batch, x0_pred)
    return noise_pred, x0_pred


def _noise_like(shape, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the CPU so that a seed gives the same digits on any device.
    return torch.randn(shape, generator=generator).to(device)


@torch.no_grad()
def ddpm_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    seed: int = 0,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    x_T: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> SampleResult:
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020), over all T steps.

    The mean of each step is the posterior mean mu_tilde(x_t, x0_hat); without
    clipping this equals the paper's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps).
    The variance is the posterior variance beta_tilde_t.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = _noise_like((n, 1, 28, 28), generator, device) if x_T is None else x_T.to(device)
    recorder = _Recorder(return_trajectory)
    for t in reversed(range(schedule.timesteps)):
        noise_pred, x0_pred = predict(model, schedule, x, t, clip_x0, guidance)
        recorder.add(t, x, x0_pred, noise_pred)
        t_batch = torch.full((n,), t, device=device, dtype=torch.long)
        mean, variance = schedule.posterior(x0_pred, x, t_batch)
        z = _noise_like(x.shape, generator, device) if t > 0 else torch.zeros_like(x)
        x = mean + variance.sqrt() * z
    return recorder.result(x.clamp(-1, 1))


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """An evenly spaced, decreasing subset of 0 .. total-1 from total-1 down to 0 (one step: just total-1)."""
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")
    if steps == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    x_T: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> SampleResult:
    """DDIM, Song et al. (2021) eq. 12, visiting ``steps`` of the T timesteps.

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = _noise_like((n, 1, 28, 28), generator, device) if x_T is None else x_T.to(device)
    recorder = _Recorder(return_trajectory)
    visited = ddim_timesteps(schedule.timesteps, steps)
    for i, t in enumerate(visited):
        noise_pred, x0_pred = predict(model, schedule, x, t, clip_x0, guidance)
        recorder.add(t, x, x0_pred, noise_pred)
        alpha_bar = schedule.alpha_bars[t]
        alpha_bar_prev = schedule.alpha_bars[visited[i + 1]] if i + 1 < len(visited) else torch.ones_like(alpha_bar)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * noise_pred
        x = alpha_bar_prev.sqrt() * x0_pred + direction
        if eta > 0 and i + 1 < len(visited):
            x = x + sigma * _noise_like(x.shape, generator, device)
    return recorder.result(x.clamp(-1, 1))


@dataclass(frozen=True)
class Sampler:
    """A reverse process as the rest of the library sees it: its name, how to run it, how to describe a run.

    name: the spelling users type (``sample(..., sampler=name)``, ``--sampler``,
    the explorers' menus); label: how reports and pictures write it.
    ``run(model, schedule, n, *, steps, eta, seed, clip_x0, return_trajectory, x_T, guidance)``
    draws n digits; a sampler ignores what it has no use for:
    uses_steps: False for one that always visits all T timesteps, whatever ``steps`` says;
    has_eta: whether ``eta``, the amount of fresh noise per step, means anything to it.
    """

    name: str
    label: str
    run: Callable[..., SampleResult]
    uses_steps: bool
    has_eta: bool

    def steps_visited(self, steps: int, timesteps: int) -> int:
        """How many network calls a run asked for ``steps`` makes on a schedule of ``timesteps`` (T)."""
        return steps if self.uses_steps else timesteps

    def describe(self, steps: int, timesteps: int) -> str:
        """A run in words for captions and reports, e.g. "DDIM, 50 steps" or "DDPM, 1000 steps" (T = 1000)."""
        return f"{self.label}, {self.steps_visited(steps, timesteps)} steps"


# Every sampler by name, in the order menus and help texts list them (the default first).
SAMPLER_REGISTRY: dict[str, Sampler] = {}


def register_sampler(sampler: Sampler) -> Sampler:
    """Offer ``sampler`` under its name to ``sample``, the command line and the explorers; a taken name is refused."""
    if sampler.name in SAMPLER_REGISTRY:
        raise ValueError(f"a sampler named {sampler.name!r} is already registered")
    SAMPLER_REGISTRY[sampler.name] = sampler
    return sampler


def get_sampler(name: str) -> Sampler:
    """The registered sampler called ``name``; an unknown name is refused with the known ones."""
    if name not in SAMPLER_REGISTRY:
        raise ValueError(f"sampler must be one of {tuple(SAMPLER_REGISTRY)}, got {name!r}")
    return SAMPLER_REGISTRY[name]


def __getattr__(name: str):
    # SAMPLERS is read from the registry at each use, so it also names samplers registered after import.
    if name == "SAMPLERS":
        return tuple(SAMPLER_REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run_ddpm(model, schedule, n, *, steps, eta, seed, clip_x0, return_trajectory, x_T, guidance) -> SampleResult:
    del steps, eta  # DDPM visits all T timesteps and draws fresh noise at each of them
    return ddpm_sample(model, schedule, n, seed=seed, clip_x0=clip_x0, return_trajectory=return_trajectory, x_T=x_T, guidance=guidance)


register_sampler(Sampler("ddim", "DDIM", run=ddim_sample, uses_steps=True, has_eta=True))
register_sampler(Sampler("ddpm", "DDPM", run=_run_ddpm, uses_steps=False, has_eta=False))


def sample(
    model,
    schedule,
    n: int,
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    *,
    eta: float = 0.0,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    x_T: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> SampleResult:
    """Run the registered sampler called ``sampler``; those that always take all T steps ignore ``steps``."""
    return get_sampler(sampler).run(
        model,
        schedule,
        n,
        steps=steps,
        eta=eta,
        seed=seed,
        clip_x0=clip_x0,
        return_trajectory=return_trajectory,
        x_T=x_T,
        guidance=guidance,
    )


def sample_many(
    model,
    schedule,
    n: int,
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    eta: float = 0.0,
    batch_size: int = SAMPLING_BATCH,
    guidance: Guidance | None = None,
) -> torch.Tensor:
    """n digits drawn batch_size at a time (bounded memory); batch k uses seed + k, so any n is reproducible.

    With ``guidance``, its labels (one per digit) are split into the same batches.
    """
    if guidance is not None and len(guidance.labels) != n:
        raise ValueError(f"guidance has {len(guidance.labels)} labels for n = {n} digits; give one label per digit")
    batches = []
    for k, start in enumerate(range(0, n, batch_size)):
        stop = min(n, start + batch_size)
        part = None if guidance is None else Guidance(guidance.labels[start:stop], guidance.weight)
        batches.append(sample(model, schedule, stop - start, sampler, steps, seed=seed + k, eta=eta, guidance=part).images.cpu())
    return torch.cat(batches)


def balanced_labels(n: int) -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ...: n requests spread evenly over the ten digits (rows of ten in a grid)."""
    return torch.arange(n) % 10
