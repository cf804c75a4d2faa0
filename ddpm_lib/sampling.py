"""Reverse processes: turn Gaussian noise into digits with a trained noise predictor.

Every sampler here shares one idea. At each visited timestep the network
predicts the noise eps in x_t; from it follows a guess of the clean image,
x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), and the next,
less noisy x is built from x0_hat and eps.

- DDPM (Ho et al. 2020, Algorithm 2) visits all T timesteps and samples
  x_{t-1} from the posterior q(x_{t-1} | x_t, x0_hat), which adds fresh noise.
- DDIM (Song et al. 2021, eq. 12) may skip timesteps; with eta = 0 it adds no
  noise at all, with eta = 1 it has the same step variance as DDPM.
- DPM-Solver++ (2M) (Lu et al. 2022) solves the same ODE as DDIM with eta = 0,
  to second order, by reusing the previous step's x0_hat.

A sampler is a *step*: one move from x_t to x at the next visited timestep,
written out below to be read against its paper (``ddpm_step``, ``ddim_step``,
``dpm_solver_2m_step``). One loop, ``sample_steps``, runs any of them: it asks
the network, draws the fresh noise, calls the step and yields what it saw, so
that a ``Trajectory`` (the explorers, the animation, the paths of x0_hat) is
made from the same generator that ``sample`` consumes. Everything else (the
command line, the explorers, the sweep and its plots, the benchmark) finds the
samplers by name in ``SAMPLER_REGISTRY``, so a new sampler is one
``register_sampler`` call away from being offered everywhere.

A class-conditional model can be steered by classifier-free guidance
(Ho & Salimans 2022): ask the network for its noise guess with the label and
without it, and step along the difference,

    eps_guided = eps(x_t, null) + w * (eps(x_t, y) - eps(x_t, null)),

where null is the null label, the network's "no label" (``SimpleUNet.null_label``);
so w = 0 ignores the label, w = 1 is the plain conditional model and w > 1
exaggerates what makes a y a y (sharper digits, less variety). The paper
writes the same rule with w' = w - 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .constants import SAMPLING_BATCH
from .device import model_device
from .schedule import NoiseSchedule

# A key of SAMPLER_REGISTRY. Not a Literal: the registry is open, and a sampler registered later is as valid.
SamplerName = str

DEFAULT_SAMPLER: SamplerName = "ddim"  # what ``sample``, the command line and the explorers use when not told


class Prediction(NamedTuple):
    """The network's output at one step: its noise guess eps_hat and the clean image x0_hat it implies."""

    noise: torch.Tensor
    x0: torch.Tensor


@dataclass(frozen=True)
class SamplerSettings:
    """How to run a sampler; each sampler reads what it has a use for (``Sampler.uses_steps``, ``Sampler.has_eta``).

    steps: how many timesteps to visit, for a sampler that chooses them;
    eta: the fresh noise per step, 0 none (deterministic), 1 the variance of DDPM's steps;
    clip_x0: clamp x0_hat to the data range [-1, 1] (and make eps_hat agree), a standard stabiliser.
    """

    steps: int = 50
    eta: float = 0.0
    clip_x0: bool = True

    def __post_init__(self):
        if not self.eta >= 0:  # also refuses NaN
            raise ValueError(f"eta must be >= 0, got {self.eta}")


@dataclass(frozen=True)
class SamplingStep:
    """One visited step of a run, as ``sample_steps`` yields it.

    t: the code-indexed timestep; t_prev: the next one visited, None for the last step, which lands on
    clean data; x_t: the step's input; prediction: the network's guesses made from it; x_prev: where the
    step led (after the last step, the sample before its final clamp to [-1, 1]).
    """

    t: int
    t_prev: int | None
    x_t: torch.Tensor
    prediction: Prediction
    x_prev: torch.Tensor

    def cpu(self) -> SamplingStep:
        """The same step with its pictures as float32 on the CPU (kept there, a long run does not fill an accelerator)."""
        return SamplingStep(
            self.t,
            self.t_prev,
            _on_cpu(self.x_t),
            Prediction(_on_cpu(self.prediction.noise), _on_cpu(self.prediction.x0)),
            _on_cpu(self.x_prev),
        )


def _on_cpu(picture: torch.Tensor) -> torch.Tensor:
    return picture.float().cpu()


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

    @classmethod
    def from_steps(cls, steps: Iterable[SamplingStep]) -> Trajectory:
        """The steps of a run (``sample_steps``), each copied to the CPU as it comes."""
        rows = [step.cpu() for step in steps]
        return cls(
            [row.t for row in rows],
            torch.stack([row.x_t for row in rows]),
            torch.stack([row.prediction.x0 for row in rows]),
            torch.stack([row.prediction.noise for row in rows]),
        )


@dataclass
class SampleResult:
    images: torch.Tensor  # (n, 1, 28, 28) in [-1, 1]
    trajectory: Trajectory | None = None


# --------------------------------------------------------------------------- the network's guess


@dataclass(frozen=True)
class Guidance:
    """Which digit to draw (one label per sample) and how hard to insist: w as in the module docstring."""

    labels: torch.Tensor
    weight: float = 1.0

    def __post_init__(self):
        if not self.weight >= 0:  # also refuses NaN
            raise ValueError(f"guidance weight must be >= 0 (0: ignore the label, 1: plain conditional), got {self.weight}")


def guided_noise(model: nn.Module, x_t: torch.Tensor, t_batch: torch.Tensor, guidance: Guidance | None) -> torch.Tensor:
    """eps_theta(x_t, t), or with guidance eps(x_t, null) + w (eps(x_t, y) - eps(x_t, null))."""
    if guidance is None:
        return model(x_t, t_batch).float()
    if not getattr(model, "conditional", False):
        raise ValueError("guidance needs a class-conditional model (trained with --conditional)")
    labels = guidance.labels.to(x_t.device)
    if len(labels) != len(x_t):
        raise ValueError(f"guidance has {len(labels)} labels for {len(x_t)} samples")
    w = guidance.weight
    null_labels = torch.full_like(labels, model.null_label)
    if w == 0:
        return model(x_t, t_batch, null_labels).float()
    if w == 1:
        return model(x_t, t_batch, labels).float()
    # One batch of 2n instead of two calls: the same arithmetic, half the launches.
    both = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([labels, null_labels])).float()
    eps_label, eps_null = both.chunk(2)
    return eps_null + w * (eps_label - eps_null)


def prediction_from_noise(schedule: NoiseSchedule, x_t: torch.Tensor, t: int, noise_pred: torch.Tensor, clip_x0: bool) -> Prediction:
    """A noise guess at step t, and the clean image it implies (clamped to [-1, 1] with ``clip_x0``, the noise then made to agree)."""
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    x0_pred = schedule.predict_x0(x_t, t_batch, noise_pred)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
        noise_pred = schedule.predict_noise(x_t, t_batch, x0_pred)
    return Prediction(noise_pred, x0_pred)


def predict(
    model: nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor, t: int, clip_x0: bool, guidance: Guidance | None = None
) -> Prediction:
    """The network's noise guess at step t, and the clean image it implies (a ``Prediction``: noise, x0).

    With ``clip_x0`` the image guess is clamped to the data range [-1, 1] and
    the noise guess recomputed to agree with it, a standard stabiliser.
    """
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    return prediction_from_noise(schedule, x_t, t, guided_noise(model, x_t, t_batch, guidance), clip_x0)


# --------------------------------------------------------------------------- the steps
#
# Every step has the signature of ``StepFunction``: (x_t, t, t_prev, prediction, z, schedule, settings, state)
# -> (x at t_prev, state). t and t_prev are code indices, t_prev None for the last step (to clean data,
# alpha_bar = 1); z is the fresh noise the loop drew for this step, or None where the sampler draws none
# (and at the last step); state is what a multistep solver carries from one step to the next (None at the
# first step, and for a sampler that needs none).

StepFunction = Callable[
    [torch.Tensor, int, int | None, Prediction, torch.Tensor | None, NoiseSchedule, SamplerSettings, Any], tuple[torch.Tensor, Any]
]


def ddpm_step(x_t, t, t_prev, prediction, z, schedule, settings, state=None):
    """Ancestral sampling, Algorithm 2 of Ho et al. (2020): x_{t-1} = mu_tilde_t(x_t, x0_hat) + sqrt(beta_tilde_t) z.

    The mean is the posterior mean mu_tilde_t(x_t, x0_hat); without clipping
    this equals the paper's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps).
    The variance is the posterior variance beta_tilde_t. DDPM visits every
    timestep, so t_prev is always t - 1; it has no settings of its own.
    """
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    mean, variance = schedule.posterior(prediction.x0, x_t, t_batch)
    return (mean if z is None else mean + variance.sqrt() * z), state


def ddim_step(x_t, t, t_prev, prediction, z, schedule, settings, state=None):
    """DDIM, Song et al. (2021) eq. 12, from t straight to t_prev:

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev),
    with alpha_bar_prev = 1 after the last step.
    """
    alpha_bar = schedule.alpha_bars[t]
    alpha_bar_prev = schedule.alpha_bars[t_prev] if t_prev is not None else torch.ones_like(alpha_bar)
    sigma = settings.eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * prediction.noise
    x_prev = alpha_bar_prev.sqrt() * prediction.x0 + direction
    return (x_prev if z is None else x_prev + sigma * z), state


class PreviousPrediction(NamedTuple):
    """What DPM-Solver++ (2M) carries to the next step: the timestep it last visited, and x0_hat there."""

    t: int
    x0: torch.Tensor


def half_log_snr(schedule: NoiseSchedule, t: int) -> float:
    """lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)), half the log of SNR(t), in float64."""
    return math.log(float(schedule.sqrt_alpha_bars[t]) / float(schedule.sqrt_one_minus_alpha_bars[t]))


def dpm_solver_2m_step(x_t, t, t_prev, prediction, z, schedule, settings, previous: PreviousPrediction | None = None):
    """DPM-Solver++ (2M), Lu et al. (2022), Algorithm 2: the probability-flow ODE solved in the data-prediction form.

    With sqrt(alpha_bar_t) the weight of x_0 in x_t, sqrt(1 - alpha_bar_t) that of the noise, and
    lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)) (``half_log_snr``), the ODE's exact
    solution from t to t_prev is

        x_prev = sqrt(1 - alpha_bar_prev) / sqrt(1 - alpha_bar_t) x_t
                 + sqrt(1 - alpha_bar_prev) * integral over lambda from lambda_t to lambda_prev of e^lambda x0_hat(lambda) d lambda.

    Taking x0_hat constant over the step gives the first-order step, which is DDIM with eta = 0:

        x_prev = sqrt(1 - alpha_bar_prev) / sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_prev) (1 - e^{-h}) D,
        h = lambda_prev - lambda_t > 0,  D = x0_hat(x_t, t).

    The second-order multistep rule takes x0_hat linear in lambda through this step's guess and the
    previous step's (at t_last, whose lambda is h_last = lambda_t - lambda_{t_last} below lambda_t):

        r = h_last / h,  D = (1 + 1 / (2 r)) x0_hat(x_t, t) - 1 / (2 r) x0_hat(x_{t_last}, t_last).

    The first step has no previous guess and is first order. So is the last, to clean data
    (alpha_bar_prev = 1, lambda_prev = infinity): e^{-h} = 0 and sqrt(1 - alpha_bar_prev) = 0, and the step
    returns D itself, which a second-order D would extrapolate an infinite step; the authors' code also
    ends first order when steps are few. The ODE has no noise: ``z`` is never drawn, and ``eta`` is unused.
    """
    if t_prev is None:
        return prediction.x0, None  # the first-order step to alpha_bar = 1: x0_hat itself
    lambda_t, lambda_prev = half_log_snr(schedule, t), half_log_snr(schedule, t_prev)
    h = lambda_prev - lambda_t
    data = prediction.x0
    if previous is not None:
        r = (lambda_t - half_log_snr(schedule, previous.t)) / h
        data = (1 + 1 / (2 * r)) * prediction.x0 - 1 / (2 * r) * previous.x0
    keep = float(schedule.sqrt_one_minus_alpha_bars[t_prev]) / float(schedule.sqrt_one_minus_alpha_bars[t])
    x_prev = keep * x_t + float(schedule.sqrt_alpha_bars[t_prev]) * -math.expm1(-h) * data
    return x_prev, PreviousPrediction(t, prediction.x0)


# --------------------------------------------------------------------------- which timesteps


def _check_step_count(steps: int, total: int):
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """An evenly spaced, decreasing subset of 0 .. total-1 from total-1 down to 0 (one step: just total-1)."""
    _check_step_count(steps, total)
    if steps == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


def every_timestep(schedule: NoiseSchedule, settings: SamplerSettings) -> list[int]:
    """T - 1, T - 2, ..., 0: all T timesteps, whatever ``settings.steps`` says."""
    return list(reversed(range(schedule.timesteps)))


def evenly_spaced_timesteps(schedule: NoiseSchedule, settings: SamplerSettings) -> list[int]:
    """``settings.steps`` timesteps evenly spaced in t, from T - 1 down to 0 (``ddim_timesteps``)."""
    return ddim_timesteps(schedule.timesteps, settings.steps)


def solver_timesteps(schedule: NoiseSchedule, settings: SamplerSettings) -> list[int]:
    """``settings.steps`` timesteps evenly spaced in t from T - 1, ending one spacing short of 0.

    They are DDIM's ``steps + 1`` timesteps without the last, t = 0 (all T when steps = T), so that every
    network call moves the solution: the step to clean data (first order: the data prediction) is taken
    from the last of them. At t = 0 x_t is the data prediction give or take a noise of standard deviation
    sqrt(1 - alpha_bar_1), 0.01 or less, and a call there would be spent on it. On the shipped weights this
    spacing drew better digits at 10 and 15 steps than DDIM's timesteps (which end at t = 0), with or
    without a first-order step into t = 0, and than timesteps uniform in lambda, which on the cosine schedule
    spend their first four steps within ten timesteps of T, where x_t is still noise: beta_T clamped at
    0.999 drops lambda by 3.5 in the last timestep (assets/measurements/cpu_dpm_solver_2026-12-06.md).
    """
    total, steps = schedule.timesteps, settings.steps
    _check_step_count(steps, total)
    return ddim_timesteps(total, steps) if steps == total else ddim_timesteps(total, steps + 1)[:-1]


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Sampler:
    """A reverse process as the rest of the library sees it: its name, its step, and how to describe a run.

    name: the spelling users type (``sample(..., sampler=name)``, ``--sampler``,
    the explorers' menus); label: how reports and pictures write it.
    step: the ``StepFunction``; visits(schedule, settings): the timesteps it visits, T - 1 first;
    draws_noise(settings): whether it adds fresh noise at its steps (never at the last one);
    uses_steps: False for one that always visits all T timesteps, whatever ``steps`` says;
    has_eta: whether ``eta``, the amount of fresh noise per step, means anything to it.
    """

    name: SamplerName
    label: str
    step: StepFunction
    visits: Callable[[NoiseSchedule, SamplerSettings], list[int]]
    draws_noise: Callable[[SamplerSettings], bool]
    uses_steps: bool
    has_eta: bool

    def steps_visited(self, steps: int, timesteps: int) -> int:
        """How many network calls a run asked for ``steps`` makes on a schedule of ``timesteps`` (T)."""
        return steps if self.uses_steps else timesteps

    def describe(self, steps: int, timesteps: int) -> str:
        """A run in words for captions and reports, e.g. "DDIM, 50 steps" or "DDPM, 1000 steps" (T = 1000)."""
        return f"{self.label}, {self.steps_visited(steps, timesteps)} steps"


# Every sampler by name, in the order menus and help texts list them (the default first).
SAMPLER_REGISTRY: dict[SamplerName, Sampler] = {}


def register_sampler(sampler: Sampler) -> Sampler:
    """Offer ``sampler`` under its name to ``sample``, the command line and the explorers; a taken name is refused."""
    if sampler.name in SAMPLER_REGISTRY:
        raise ValueError(f"a sampler named {sampler.name!r} is already registered")
    SAMPLER_REGISTRY[sampler.name] = sampler
    return sampler


def get_sampler(name: SamplerName) -> Sampler:
    """The registered sampler called ``name``; an unknown name is refused with the known ones."""
    if name not in SAMPLER_REGISTRY:
        raise ValueError(f"sampler must be one of {tuple(SAMPLER_REGISTRY)}, got {name!r}")
    return SAMPLER_REGISTRY[name]


register_sampler(
    Sampler(
        "ddim",
        "DDIM",
        ddim_step,
        visits=evenly_spaced_timesteps,
        draws_noise=lambda settings: settings.eta > 0,
        uses_steps=True,
        has_eta=True,
    )
)
register_sampler(
    Sampler("ddpm", "DDPM", ddpm_step, visits=every_timestep, draws_noise=lambda settings: True, uses_steps=False, has_eta=False)
)
register_sampler(
    Sampler(
        "dpm_solver",
        "DPM-Solver++ (2M)",
        dpm_solver_2m_step,
        visits=solver_timesteps,
        draws_noise=lambda settings: False,
        uses_steps=True,
        has_eta=False,
    )
)


# --------------------------------------------------------------------------- the loop


def _noise_like(shape, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the CPU so that a seed gives the same digits on any device.
    return torch.randn(shape, generator=generator).to(device)


@torch.no_grad()
def sample_steps(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    sampler: SamplerName | Sampler = DEFAULT_SAMPLER,
    settings: SamplerSettings | None = None,
    seed: int = 0,
    x_T: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> Iterator[SamplingStep]:
    """Run the registered sampler called ``sampler`` (with ``settings``, default ``SamplerSettings()``) and yield each visited step.

    ``sampler`` may also be a ``Sampler`` itself, registered or not: a registered one with another step
    function in it (``dataclasses.replace``) visits the same timesteps and draws the same noise.
    The seed's generator draws x_T first (unless ``x_T`` is given), then, for a sampler that draws
    noise, one z per step but the last, in the order of the steps: one seed, one set of digits.
    """
    chosen = sampler if isinstance(sampler, Sampler) else get_sampler(sampler)
    settings = settings or SamplerSettings()
    visited = chosen.visits(schedule, settings)  # refuses a bad step count before any work
    fresh_noise = chosen.draws_noise(settings)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    x = _noise_like((n, 1, 28, 28), generator, device) if x_T is None else x_T.to(device)
    state = None
    for t, t_prev in zip(visited, [*visited[1:], None]):
        prediction = predict(model, schedule, x, t, settings.clip_x0, guidance)
        z = _noise_like(x.shape, generator, device) if fresh_noise and t_prev is not None else None
        x_prev, state = chosen.step(x, t, t_prev, prediction, z, schedule, settings, state)
        yield SamplingStep(t, t_prev, x, prediction, x_prev)
        x = x_prev


def sample(
    model,
    schedule,
    n: int,
    sampler: SamplerName | Sampler = DEFAULT_SAMPLER,
    steps: int = 50,
    seed: int = 0,
    *,
    eta: float = 0.0,
    clip_x0: bool = True,
    return_trajectory: bool = False,
    x_T: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> SampleResult:
    """n digits from the registered sampler called ``sampler`` (or a ``Sampler``, as for ``sample_steps``); those that
    always take all T steps ignore ``steps``."""
    rows, last = [], None
    for last in sample_steps(model, schedule, n, sampler, SamplerSettings(steps, eta, clip_x0), seed, x_T, guidance):
        if return_trajectory:
            rows.append(last.cpu())
    return SampleResult(last.x_prev.clamp(-1, 1), Trajectory.from_steps(rows) if return_trajectory else None)


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
    """DDPM over all T steps (``ddpm_step``): ``sample(..., "ddpm")``."""
    return sample(model, schedule, n, "ddpm", seed=seed, clip_x0=clip_x0, return_trajectory=return_trajectory, x_T=x_T, guidance=guidance)


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
    """DDIM visiting ``steps`` of the T timesteps (``ddim_step``): ``sample(..., "ddim")``."""
    return sample(
        model, schedule, n, "ddim", steps, seed, eta=eta, clip_x0=clip_x0, return_trajectory=return_trajectory, x_T=x_T, guidance=guidance
    )


def sample_many(
    model,
    schedule,
    n: int,
    sampler: SamplerName = DEFAULT_SAMPLER,
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
