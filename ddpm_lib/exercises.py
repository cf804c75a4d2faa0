"""Exercises with a checker: write the code of an equation, learn at once whether it is right, then see it run.

A notebook exercise asks for one small function, shipped as a stub. The cell after it calls
``check(name, function)``, which runs the function on a few seeded inputs, compares each
answer with what ``ddpm_lib`` itself computes, and answers in one line:

    ✓ q_sample matches ddpm_lib on 15 cases: t = 0, t = 1, t = 500, t = 999, mixed t, each whole and term by term
    ✗ q_sample: looks like alpha_t was used where alpha_bar_t belongs. Hint: ...
    … q_sample: not attempted yet — replace the ... with your code

What the checker looks for, beyond the right numbers:
- each term alone. Where the answer is linear in some inputs (x0 and the noise in q_sample, x_t and
  the noise guess in a sampler step), every case is repeated with all but one of them set to zero and
  compared on that term's own scale, so that a wrong coefficient of a small term cannot hide behind a
  large one; a wrong answer whose other terms are right is told which coefficient to look at.
- typical mistakes. When an answer is wrong, the checker runs typical wrong solutions (a timestep off
  by one, a square root forgotten, a sign flipped, ...) on the same inputs; if the student's answers
  agree with one of them, the line names that mistake.
- one loss per digit. ``training_loss`` is also asked about single digits at t = 0, 1, T/2 and T - 1,
  with a network whose answer depends strongly on t, so that the schedule read at t - 1 or the network
  told another t shows; and its loss must carry a gradient, since a trainer will call .backward() on it.
- its own random numbers. Every case is asked twice: a function that answers differently draws random
  numbers of its own where it should use the noise it is handed.
- inputs changed in place, answers that are one image repeated, and wrong shapes, each named.
The lines contain no timings and no unseeded numbers, so that nbval can compare them.

The functions students write. ``t`` is always a code index, 0 .. T-1, standing for the paper's
t = 1 .. T, and ``schedule`` is a ``NoiseSchedule``:

    alpha_bars(betas)                            alpha_bar_t = (1 - beta_1) ... (1 - beta_t), for every t
    q_sample(x0, t, noise, schedule)             x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise
    training_loss(model, x0, t, noise, schedule) L_simple = mean of (noise - model(x_t, t))^2
    v_target(x0, t, noise, schedule)             v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0
    posterior_mean(x0, x_t, t, schedule)         mu_tilde_t(x_t, x0), eq. 7 of Ho et al. (2020)
    ddpm_step(x_t, t, noise_pred, z, schedule)   x_{t-1}: line 4 of Algorithm 2, sigma_t^2 = beta_tilde_t
    ddim_step(x_t, t, t_prev, noise_pred, schedule)  x_{t_prev}: eq. 12 of Song et al. (2021), eta = 0
    guided_noise(eps_label, eps_nothing, w)      eps_nothing + w (eps_label - eps_nothing)
    noise_from_score(score, alpha_bar)           the best noise prediction, -sqrt(1 - alpha_bar) score

Where ``t`` is a LongTensor of shape (n,), there is one timestep per image, as in training; in the
two sampler steps it is a plain int, as in the samplers' loops. Images are (n, 1, 28, 28).

Where each right answer comes from (the checker never writes the correct formula a second time):
``NoiseSchedule``'s own tensors, ``NoiseSchedule.q_sample`` and ``NoiseSchedule.posterior``;
``objective.diffusion_loss`` given the same t and noise, and ``Objective.target``; the samplers'
own steps, ``sampling.ddpm_step`` and ``sampling.ddim_step``, on the same inputs;
``sampling.guided_noise`` asked with a scripted class-conditional network; the closed-form
``GaussianMixture2D.best_noise_prediction`` of notebook 4's 2-D toy.

Once ``check`` accepts it, a student's ``ddpm_step``, ``ddim_step`` or ``training_loss`` can do the
library's work: ``yours_or_ddpm_lib`` hands it over in the form the sampler loop (``sampling.sample``)
or the ``Trainer`` takes, or ddpm_lib's own function while it is not right yet, with a line that says
which one runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from .device import model_device
from .mixture2d import THREE_CLASSES
from .objective import Objective, diffusion_loss
from .sampling import Guidance, SamplerSettings, ddim_step, ddim_timesteps, ddpm_step, get_sampler, prediction_from_noise
from .sampling import guided_noise as library_guided_noise
from .schedule import SCHEDULE_REGISTRY, NoiseSchedule
from .unet import SimpleUNet, UNetConfig

SEED = 0  # every input the checker makes is drawn from generators seeded from this
BATCH = 4  # images per case: few enough to be instant, more than one so per-image mistakes show
# Answers count as equal within 0.2% of their scale (see _close). Both sides are float32, but the
# library derives its tensors in float64: a student's 1 - alpha_bar_t, with alpha_bar_t = 0.9999
# near t = 0, keeps only three or four digits. Every known mistake misses by far more.
TOLERANCE = 2e-3
# The scale of a term that must vanish (the fresh noise of DDPM's last step): the schedule's tensors
# make it exactly zero, and noise added there, however little, is far larger than this.
ZERO_TERM_SCALE = 1e-5
L_SIMPLE = Objective(prediction="eps", weighting="uniform")  # Ho et al.'s loss, the one the exercise asks for


@dataclass(frozen=True, repr=False)
class CheckResult:
    """The verdict on one exercise; its repr is the one line the notebook shows."""

    exercise: str
    status: str  # "right", "wrong", "error" (the function raised) or "not attempted"
    message: str
    mistake: str | None = None  # key of the recognised typical mistake, if any

    @property
    def passed(self) -> bool:
        return self.status == "right"

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


@dataclass(frozen=True)
class Case:
    """One call of the student's function: the arguments, and ddpm_lib's answer to them.

    scale says what TOLERANCE is a fraction of: "whole", 1 + the largest value (answers of order 1);
    "term", the largest value (one term alone, however small); "each", every value itself (answers
    that span many scales). ``alone`` names the input whose term is left when ``zeroed`` are set to 0.
    """

    where: str  # how messages name the inputs, e.g. "t = 0"
    args: tuple
    expected: torch.Tensor
    scale: str = "whole"
    alone: str | None = None
    zeroed: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.where} with {', '.join(f'{name} = 0' for name in self.zeroed)}" if self.zeroed else self.where


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer, given as wrong solutions with the student's signature."""

    key: str
    what: str  # completes "looks like ..."
    hint: str
    versions: tuple[Callable, ...]  # ways of writing the same mistake


@dataclass(frozen=True)
class Exercise:
    name: str
    signature: str
    make_cases: Callable[[NoiseSchedule, nn.Module | None], list[Case]]
    mistakes: tuple[Mistake, ...]
    hint: str  # for a wrong answer that matches no known mistake
    coefficients: dict[str, str] | None = None  # for a term that is wrong alone: each linear input's coefficient, in words
    draws_hint: str = "nothing in it is random: remove what draws (torch.randn, torch.rand, ...)"  # for one that draws its own numbers
    needs_gradient: bool = False  # a trainer differentiates its answer

    @property
    def arguments(self) -> list[str]:
        return re.findall(r"\w+", self.signature.split("(", 1)[1])


# --------------------------------------------------------------------------- inputs


def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


def _digits(generator: torch.Generator, n: int = BATCH) -> torch.Tensor:
    """Stand-ins for MNIST digits: values in [-1, 1], shape (n, 1, 28, 28)."""
    return torch.rand((n, 1, 28, 28), generator=generator) * 2 - 1


def _normal(generator: torch.Generator, n: int = BATCH) -> torch.Tensor:
    return torch.randn((n, 1, 28, 28), generator=generator)


def _timestep_batches(schedule: NoiseSchedule) -> list[tuple[str, torch.Tensor]]:
    """The first and last steps, their neighbours' edge cases, the middle, and a batch of mixed t."""
    T = schedule.timesteps
    batches = [(f"t = {t}", torch.full((BATCH,), t)) for t in (0, 1, T // 2, T - 1)]
    # Different t per image catches a lookup done once for the whole batch.
    return batches + [("mixed t", torch.tensor([T - 1, 0, T // 2, 1]))]


def _per_image(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (n, 1, 1, 1), to broadcast over a batch of images (used by the mistakes)."""
    return values[t].view(-1, 1, 1, 1)


def _cases(inputs: list[tuple[str, tuple]], arguments: tuple[str, ...], answer: Callable, linear_in: tuple[str, ...] = ()) -> list[Case]:
    """A case for each ``(where, args)``, ``answer(*args)`` being ddpm_lib's answer; then, for each input the answer
    is linear in (``linear_in``), the same inputs again with the other inputs of ``linear_in`` set to zero, so that
    its term alone is compared on its own scale."""
    whole = [Case(where, args, answer(*args)) for where, args in inputs]
    term_by_term = []
    for kept in linear_in:
        zeroed = tuple(name for name in linear_in if name != kept)
        for where, args in inputs:
            alone = tuple(torch.zeros_like(value) if name in zeroed else value for name, value in zip(arguments, args))
            term_by_term.append(Case(where, alone, answer(*alone), scale="term", alone=kept, zeroed=zeroed))
    return whole + term_by_term


def _root_forgotten(value):
    """Stands for torch.sqrt in a mistake that leaves a square root out."""
    return value


# --------------------------------------------------------------------------- alpha_bars


def _alpha_bars_cases(schedule, model):
    """The schedule given, the other registered schedules at the same T, and a short one (T = 10)."""
    others = [kind for kind in SCHEDULE_REGISTRY if kind != schedule.kind]
    schedules = [schedule, *(NoiseSchedule(kind, schedule.timesteps) for kind in others), NoiseSchedule(schedule.kind, 10)]
    # float64 betas, as the registry makes them: the running product over 1000 steps needs the digits.
    # alpha_bar falls from about 1 to 1e-9, so each value is compared with itself, not with the largest.
    return [Case(f"{s.kind} (T = {s.timesteps})", (SCHEDULE_REGISTRY[s.kind](s.timesteps),), s.alpha_bars, scale="each") for s in schedules]


ALPHA_BARS_MISTAKES = (
    Mistake(
        "alphas_not_multiplied",
        "alpha_t = 1 - beta_t was returned, one step's share",
        "alpha_bar_t is what is left after all t steps: the running product of the alphas, torch.cumprod(1 - betas, dim=0)",
        (lambda betas: 1 - betas,),
    ),
    Mistake(
        "summed_not_multiplied",
        "the steps were added up instead of multiplied",
        "each step keeps a fraction alpha_t of the signal's variance, and fractions of fractions multiply: torch.cumprod, not torch.cumsum",
        (lambda betas: 1 - torch.cumsum(betas, dim=0), lambda betas: torch.cumsum(1 - betas, dim=0)),
    ),
    Mistake(
        "product_of_betas",
        "the betas were multiplied instead of the alphas",
        "beta_t is the noise a step adds; the signal it keeps is alpha_t = 1 - beta_t, and alpha_bar_t multiplies those",
        (lambda betas: torch.cumprod(betas, dim=0), lambda betas: 1 - torch.cumprod(betas, dim=0)),
    ),
    Mistake(
        "shifted_by_one",
        "alpha_bar_{t-1} was returned: the product stops one step short",
        "alpha_bar_t includes step t itself, so alpha_bar_1 = alpha_1 = 1 - beta_1 (index 0), not 1",
        (lambda betas: torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, dim=0)[:-1]]),),
    ),
    Mistake(
        "noise_share_returned",
        "1 - alpha_bar_t, the noise's share of the variance, was returned",
        "alpha_bar_t is the signal's share, the running product itself: torch.cumprod(1 - betas, dim=0)",
        (lambda betas: 1 - torch.cumprod(1 - betas, dim=0),),
    ),
    Mistake(
        "square_root_taken",
        "sqrt(alpha_bar_t) was returned",
        "alpha_bar_t is a share of the variance, with no root; its root comes later, as x0's weight in q_sample",
        (lambda betas: torch.cumprod(1 - betas, dim=0).sqrt(),),
    ),
    Mistake(
        "total_not_running",
        "the total product alpha_bar_T was returned, one number instead of one value per t",
        "torch.cumprod keeps the running product at every t; torch.prod keeps only its end",
        (lambda betas: torch.prod(1 - betas),),
    ),
)


# --------------------------------------------------------------------------- q_sample


def _x0_t_noise_cases(schedule, seed_offset: int, answer: Callable) -> list[Case]:
    """Cases for a function of (x0, t, noise, schedule), linear in x0 and the noise: seeded digits and noise at
    each batch of t, with ``answer(x0, t, noise)`` as the right result."""
    generator = _generator(seed_offset)
    inputs = [(where, (_digits(generator), t, _normal(generator), schedule)) for where, t in _timestep_batches(schedule)]
    return _cases(inputs, ("x0", "t", "noise", "schedule"), lambda x0, t, noise, s: answer(x0, t, noise), linear_in=("x0", "noise"))


def _q_sample_cases(schedule, model):
    return _x0_t_noise_cases(schedule, 1, schedule.q_sample)


def _jump(alpha_bar, x0, noise, root=torch.sqrt, noise_root=None, swap=False):
    """root(alpha_bar) x0 + noise_root(1 - alpha_bar) noise from the given pieces; ``swap`` gives each the other's weight."""
    noise_root = noise_root or root
    signal_weight, noise_weight = root(alpha_bar), noise_root(1 - alpha_bar)
    if swap:
        signal_weight, noise_weight = noise_weight, signal_weight
    return signal_weight * x0 + noise_weight * noise


Q_SAMPLE_MISTAKES = (
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "one jump from x_0 needs the product alpha_bar_t = alpha_1 ... alpha_t (schedule.alpha_bars), not the single step's alpha_t",
        (lambda x0, t, noise, s: _jump(_per_image(s.alphas, t), x0, noise),),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "the weights are sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t): alpha_bar_t is a share of the variance, its root a factor of the image",
        (
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, root=_root_forgotten),
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, noise_root=_root_forgotten),
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, root=_root_forgotten, noise_root=torch.sqrt),
        ),
    ),
    Mistake(
        "weights_swapped",
        "the weights of x0 and of the noise were swapped",
        "x0 keeps sqrt(alpha_bar_t), near 1 at small t, and the noise gets sqrt(1 - alpha_bar_t): x_t starts as the digit",
        (lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, swap=True),),
    ),
    Mistake(
        "t_off_by_one",
        "the timestep is off by one",
        "t is already a code index (0 .. T-1): use schedule.alpha_bars[t], not [t - 1]",
        (
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars_prev, t), x0, noise),
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t - 1), x0, noise),
        ),
    ),
    Mistake(
        "one_t_for_the_batch",
        "one timestep was used for the whole batch",
        "every image has its own t: schedule.alpha_bars[t].view(-1, 1, 1, 1) gives one factor per image",
        (lambda x0, t, noise, s: _jump(s.alpha_bars[t[0]], x0, noise),),
    ),
)


# --------------------------------------------------------------------------- training_loss


def _untrained_network() -> nn.Module:
    """The tests' tiny SimpleUNet, seeded, with an output layer that is not zero."""
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random numbers alone
        torch.manual_seed(SEED)
        network = SimpleUNet(UNetConfig(channels=(8, 16, 16), attention=False))
        # SimpleUNet starts by predicting zero noise whatever it sees; then feeding it x_0 instead
        # of x_t would go unnoticed. A random last layer makes its answer depend on its input.
        nn.init.normal_(network.conv_out.weight, std=0.1)
    return network


class _TimeDependentNetwork(nn.Module):
    """A stand-in noise predictor whose answer depends strongly on t: gain[t] x_t + offset[t], drawn per timestep.

    An untrained SimpleUNet barely notices its t, so a loss that tells it another t, or that builds x_t
    from the schedule at t - 1, comes out almost the same; this one's loss changes at once. Asked about
    t = T it raises IndexError, as the schedule's tensors do.
    """

    def __init__(self, timesteps: int):
        super().__init__()
        generator = _generator(30)
        self.gain = nn.Parameter(0.5 + 1.5 * torch.rand(timesteps, generator=generator))
        self.offset = nn.Parameter(0.5 * torch.randn(timesteps, generator=generator))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).long()  # a float t with integer values reads the same entry
        return self.gain[t].view(-1, 1, 1, 1) * x_t + self.offset[t].view(-1, 1, 1, 1)


def _training_loss_cases(schedule, model):
    """Three batches of random t for ``model`` (default: an untrained SimpleUNet), then single digits at the first,
    second, middle and last t for a network that depends on t, so that each digit's loss is compared."""
    model = model if model is not None else _untrained_network()
    device = model_device(model)
    schedule = schedule.to(device)
    inputs = []
    for k in range(3):
        x0 = _digits(_generator(10 + k)).to(device)
        draws = _generator(20 + k)
        t = torch.randint(0, schedule.timesteps, (BATCH,), generator=draws).to(device)
        noise = torch.randn(x0.shape, generator=draws).to(device)
        inputs.append((f"batch {k + 1}", (model, x0, t, noise, schedule)))
    by_t = _TimeDependentNetwork(schedule.timesteps).to(device)
    generator = _generator(13)
    for t in (0, 1, schedule.timesteps // 2, schedule.timesteps - 1):
        x0, noise = _digits(generator, 1).to(device), _normal(generator, 1).to(device)
        inputs.append((f"one digit at t = {t}", (by_t, x0, torch.tensor([t], device=device), noise, schedule)))
    return _cases(
        inputs, ("model", "x0", "t", "noise", "schedule"), lambda m, x0, t, noise, s: diffusion_loss(m, s, x0, t, noise, objective=L_SIMPLE)
    )


def _l_simple(m, x0, t, noise, s, *, alpha_bar=None, root=torch.sqrt, shown=None, told=None, target=None, reduce=torch.mean):
    """reduce((model(x_t, t) - noise)^2) from the given pieces; the defaults are right. x_t is built from ``alpha_bar``
    (one value per image); ``shown`` is what the network sees instead of x_t, ``told`` the t it is told instead,
    ``target`` what its answer is compared with instead of the noise."""
    alpha_bar = _per_image(s.alpha_bars, t) if alpha_bar is None else alpha_bar
    x_t = root(alpha_bar) * x0 + root(1 - alpha_bar) * noise
    prediction = m(x_t if shown is None else shown, t if told is None else told).float()
    return reduce((prediction - (noise if target is None else target)) ** 2)


TRAINING_LOSS_MISTAKES = (
    Mistake(
        "summed_not_averaged",
        "the squared errors were summed instead of averaged",
        "L_simple is a mean over the batch and the pixels (F.mse_loss); a sum grows with the batch size and the learning rate would have to shrink with it",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, reduce=torch.sum),),
    ),
    Mistake(
        "norm_per_image",
        "each image's squared norm was summed over its pixels, then averaged over the batch",
        "that is ||eps - eps_theta||^2 read literally; ddpm_lib also averages over the 784 pixels (F.mse_loss), which only rescales the loss by 1/784",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, reduce=lambda error: error.sum(dim=(1, 2, 3)).mean()),),
    ),
    Mistake(
        "target_is_x0",
        "the prediction was compared with x0 instead of the noise",
        "the network predicts the noise eps that made x_t, so the target is `noise`",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, target=x0),),
    ),
    Mistake(
        "target_is_v",
        "the prediction was compared with v, this notebook's default target, instead of the noise",
        "L_simple, the loss of this exercise, regresses onto the noise eps; v is the next exercise's target",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, target=Objective(prediction="v").target(s, x0, t, noise)),),
    ),
    Mistake(
        "weighted_by_snr",
        "the squared errors were weighted per t, as this notebook's recipe (min-SNR) does",
        "L_simple, the loss of this exercise, weighs every t alike: no weight, the noise as target",
        (
            lambda m, x0, t, noise, s: diffusion_loss(m, s, x0, t, noise, objective=Objective(prediction="eps", weighting="min_snr")),
            lambda m, x0, t, noise, s: diffusion_loss(m, s, x0, t, noise, objective=Objective(prediction="v", weighting="min_snr")),
        ),
    ),
    Mistake(
        "network_sees_x0",
        "the network was given x0 instead of x_t",
        "first noise the digit, x_t = q_sample(x0, t, noise), and ask the network about x_t: it must find the noise in it",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, shown=x0),),
    ),
    Mistake(
        "network_told_another_t",
        "the network was told another timestep than the one x_t was noised to",
        "ask model(x_t, t) with the same t: the network must know how much noise to look for",
        (
            lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, told=torch.zeros_like(t)),
            lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, told=t - 1),
        ),
    ),
    Mistake(
        "t_off_by_one",
        "the schedule was read at t - 1",
        "t is already a code index (0 .. T-1): schedule.sqrt_alpha_bars[t]; at t = 0, [t - 1] wraps round to the last step",
        (
            lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, alpha_bar=_per_image(s.alpha_bars, t - 1)),
            lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, alpha_bar=_per_image(s.alpha_bars_prev, t)),
        ),
    ),
    Mistake(
        "sqrt_forgotten",
        "x_t was formed without its square roots",
        "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise: schedule.sqrt_alpha_bars[t] and schedule.sqrt_one_minus_alpha_bars[t]",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, root=_root_forgotten),),
    ),
    Mistake(
        "one_t_for_the_batch",
        "one timestep was used for the whole batch",
        "every digit has its own t: index the schedule with t, then .view(-1, 1, 1, 1)",
        (lambda m, x0, t, noise, s: _l_simple(m, x0, t, noise, s, alpha_bar=s.alpha_bars[t[0]]),),
    ),
)


# --------------------------------------------------------------------------- v_target


def _v_target_cases(schedule, model):
    v = Objective(prediction="v")
    return _x0_t_noise_cases(schedule, 8, lambda x0, t, noise: v.target(schedule, x0, t, noise))


def _velocity(x0, t, noise, s, alpha_bar=None, root=torch.sqrt, noise_sign=+1, x0_sign=-1, swap=False):
    """root(alpha_bar) noise - root(1 - alpha_bar) x0 from the given pieces; the defaults are the right ones."""
    alpha_bar = _per_image(s.alpha_bars, t) if alpha_bar is None else alpha_bar
    a, b = (x0, noise) if swap else (noise, x0)
    return noise_sign * root(alpha_bar) * a + x0_sign * root(1 - alpha_bar) * b


V_TARGET_MISTAKES = (
    Mistake(
        "signs_flipped",
        "the signs are flipped",
        "v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0: the noise counts positive and the digit negative, so that v is about -x0 at t = T",
        (
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, noise_sign=-1, x0_sign=+1),
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, x0_sign=+1),
        ),
    ),
    Mistake(
        "weights_swapped",
        "the weights of the noise and of x0 were swapped",
        "the noise gets the digit's weight from x_t, sqrt(alpha_bar_t), and x0 the noise's, sqrt(1 - alpha_bar_t): at small t, v is almost the noise",
        (
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, swap=True),
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, swap=True, noise_sign=-1, x0_sign=+1),
        ),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "the weights are sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), the same as in x_t",
        (lambda x0, t, noise, s: _velocity(x0, t, noise, s, root=_root_forgotten),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "v mixes the noise and the digit in the proportions of x_t, which come from alpha_bar_t (schedule.alpha_bars)",
        (lambda x0, t, noise, s: _velocity(x0, t, noise, s, alpha_bar=_per_image(s.alphas, t)),),
    ),
    Mistake(
        "t_off_by_one",
        "the timestep is off by one",
        "t is already a code index (0 .. T-1): use schedule.alpha_bars[t], not [t - 1]",
        (
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, alpha_bar=_per_image(s.alpha_bars_prev, t)),
            lambda x0, t, noise, s: _velocity(x0, t, noise, s, alpha_bar=_per_image(s.alpha_bars, t - 1)),
        ),
    ),
    Mistake(
        "one_t_for_the_batch",
        "one timestep was used for the whole batch",
        "every image has its own t: schedule.alpha_bars[t].view(-1, 1, 1, 1) gives one factor per image",
        (lambda x0, t, noise, s: _velocity(x0, t, noise, s, alpha_bar=s.alpha_bars[t[0]]),),
    ),
)


# --------------------------------------------------------------------------- posterior_mean


def _posterior_mean_cases(schedule, model):
    generator = _generator(2)
    inputs = [(where, (_digits(generator), _normal(generator), t, schedule)) for where, t in _timestep_batches(schedule)]
    return _cases(inputs, ("x0", "x_t", "t", "schedule"), lambda x0, x_t, t, s: s.posterior(x0, x_t, t)[0], linear_in=("x0", "x_t"))


def _mu_tilde(
    x0, x_t, t, s, *, x0_alpha_bar_prev=None, xt_alpha_bar_prev=None, xt_alpha=None, x0_root=torch.sqrt, xt_root=torch.sqrt, swap=False
):
    """Eq. 7 built from the given pieces; the defaults are the right ones.

    x0's coefficient is x0_root(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), x_t's is
    xt_root(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); each coefficient's alpha_bar_{t-1}
    (and x_t's alpha_t) may be replaced on its own, and ``swap`` exchanges the two coefficients.
    """
    alpha_bar_prev, alpha_bar = _per_image(s.alpha_bars_prev, t), _per_image(s.alpha_bars, t)
    beta, alpha = _per_image(s.betas, t), _per_image(s.alphas, t)
    x0_alpha_bar_prev = alpha_bar_prev if x0_alpha_bar_prev is None else x0_alpha_bar_prev
    xt_alpha_bar_prev = alpha_bar_prev if xt_alpha_bar_prev is None else xt_alpha_bar_prev
    coef_x0 = x0_root(x0_alpha_bar_prev) * beta / (1 - alpha_bar)
    coef_xt = xt_root(alpha if xt_alpha is None else xt_alpha) * (1 - xt_alpha_bar_prev) / (1 - alpha_bar)
    return coef_xt * x0 + coef_x0 * x_t if swap else coef_x0 * x0 + coef_xt * x_t


POSTERIOR_MEAN_MISTAKES = (
    Mistake(
        "coefficients_swapped",
        "the coefficients of x_0 and x_t were swapped",
        "x_0's coefficient holds beta_t, x_t's holds 1 - alpha_bar_{t-1}: at large t the mean must stay close to x_t",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, swap=True),),
    ),
    Mistake(
        "alpha_bar_t_in_x0_coefficient",
        "alpha_bar_t was used in x_0's coefficient, where alpha_bar_{t-1} belongs",
        "x_0's coefficient is sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), with alpha_bar one step before t: schedule.alpha_bars_prev[t]",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, x0_alpha_bar_prev=_per_image(s.alpha_bars, t)),),
    ),
    Mistake(
        "alpha_bar_t_in_xt_coefficient",
        "alpha_bar_t was used in x_t's coefficient, where alpha_bar_{t-1} belongs",
        "x_t's coefficient is sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), with alpha_bar one step before t in the numerator: schedule.alpha_bars_prev[t]",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, xt_alpha_bar_prev=_per_image(s.alpha_bars, t)),),
    ),
    Mistake(
        "alpha_bar_t_for_alpha_bar_prev",
        "alpha_bar_t was used where alpha_bar_{t-1} belongs",
        "the numerators hold alpha_bar_{t-1}, one step earlier: schedule.alpha_bars_prev[t]",
        (
            lambda x0, x_t, t, s: _mu_tilde(
                x0, x_t, t, s, x0_alpha_bar_prev=_per_image(s.alpha_bars, t), xt_alpha_bar_prev=_per_image(s.alpha_bars, t)
            ),
        ),
    ),
    Mistake(
        "wraps_around_at_t_0",
        "alpha_bar_{t-1} was read as schedule.alpha_bars[t - 1], which wraps round at t = 0",
        "at t = 0 (the paper's t = 1) alpha_bar_{t-1} is alpha_bar_0 = 1, but alpha_bars[-1] is the last entry: use schedule.alpha_bars_prev[t]",
        (
            lambda x0, x_t, t, s: _mu_tilde(
                x0, x_t, t, s, x0_alpha_bar_prev=_per_image(s.alpha_bars, t - 1), xt_alpha_bar_prev=_per_image(s.alpha_bars, t - 1)
            ),
        ),
    ),
    Mistake(
        "alpha_bar_for_alpha_in_xt",
        "sqrt(alpha_bar_t) was used in x_t's coefficient, where sqrt(alpha_t) belongs",
        "x_t's coefficient comes from one forward step, q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I): schedule.alphas[t]",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, xt_alpha=_per_image(s.alpha_bars, t)),),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "eq. 7 has sqrt(alpha_bar_{t-1}) in x_0's coefficient and sqrt(alpha_t) in x_t's",
        (
            lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, x0_root=_root_forgotten, xt_root=_root_forgotten),
            lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, x0_root=_root_forgotten),
            lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, xt_root=_root_forgotten),
        ),
    ),
    Mistake(
        "one_t_for_the_batch",
        "one timestep was used for the whole batch",
        "every image has its own t: index each schedule tensor with t, then .view(-1, 1, 1, 1)",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t[:1].expand_as(t), s),),
    ),
)


# --------------------------------------------------------------------------- ddpm_step, ddim_step


def _sampler_step_inputs(schedule: NoiseSchedule, t: int, generator: torch.Generator):
    """x_t and a noise guess at step t as a sampler meets them: a picture inside [-1, 1] noised to t, and the
    noise that made it plus a fixed error (a network's guess is not exact)."""
    picture, noise = _digits(generator) * 0.8, _normal(generator)
    x_t = schedule.q_sample(picture, torch.full((BATCH,), t), noise)
    return x_t, noise + 0.1 * _normal(generator)


def _library_step(step, x_t, t, t_prev, noise_pred, z, schedule, clip_x0=False):
    """The library's own sampler step from the student's inputs, x0_hat unclipped as the exercises write it
    (clipped, it is a student's mistake: the sampler clips before the step, the step itself does not)."""
    prediction = prediction_from_noise(schedule, x_t, t, noise_pred, clip_x0=clip_x0)
    return step(x_t, t, t_prev, prediction, z, schedule, SamplerSettings(clip_x0=clip_x0), None)[0]


def _library_ddpm_step(x_t, t, noise_pred, z, schedule, clip_x0=False):
    """ddpm_lib's DDPM step in the exercise's signature. At t = 0, the last step, the library draws no z: the one
    handed to the student must go unused."""
    return _library_step(ddpm_step, x_t, t, t - 1 if t > 0 else None, noise_pred, z if t > 0 else None, schedule, clip_x0)


def _ddpm_cases(schedule, model):
    T, generator = schedule.timesteps, _generator(4)
    inputs = []
    for t in (T - 1, T // 2, 2, 1, 0):  # t = 2 tells a variance read at t - 1 from one left out at t = 1
        x_t, noise_pred = _sampler_step_inputs(schedule, t, generator)
        inputs.append((f"t = {t}", (x_t, t, noise_pred, _normal(generator), schedule)))
    return _cases(inputs, ("x_t", "t", "noise_pred", "z", "schedule"), _library_ddpm_step, linear_in=("x_t", "noise_pred", "z"))


def _algorithm_2_step(
    x_t, t, eps, z, s, *, at=None, alpha=None, alpha_bar=None, variance=None, quiet_at=0, eps_sign=-1,
    root=torch.sqrt, sigma_root=torch.sqrt, scale_whole_bracket=True,
):  # fmt: skip
    """Line 4 of Algorithm 2 built from the given pieces; the defaults are the right ones:
    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sigma_t z, sigma_t^2 = beta_tilde_t.

    at: the index the schedule is read at (right: t); alpha, alpha_bar, variance: replace alpha_t (in 1/sqrt(alpha_t)),
    alpha_bar_t, sigma_t^2; quiet_at: the step with no fresh noise (right: the last, code t = 0); eps_sign: -1
    subtracts the noise guess; root, sigma_root: the square roots of the mean's weights and of the variance;
    scale_whole_bracket=False divides only x_t by sqrt(alpha_t).
    """
    at = t if at is None else at
    alpha = s.alphas[at] if alpha is None else alpha
    beta = s.betas[at]
    alpha_bar = s.alpha_bars[at] if alpha_bar is None else alpha_bar
    variance = s.posterior_variance[at] if variance is None else variance
    sigma = sigma_root(variance) if t != quiet_at else 0.0
    noise_share = eps_sign * beta / root(1 - alpha_bar) * eps
    mean = (x_t + noise_share) / root(alpha) if scale_whole_bracket else x_t / root(alpha) + noise_share
    return mean + sigma * z


DDPM_STEP_MISTAKES = (
    Mistake(
        "variance_beta_t",
        "sigma_t^2 = beta_t was used",
        "the paper allows it, but ddpm_lib uses sigma_t^2 = beta_tilde_t, the posterior's variance: schedule.posterior_variance[t]",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, variance=s.betas[t]),),
    ),
    Mistake(
        "noise_at_the_last_step",
        "noise was added at the last step",
        "line 3 of Algorithm 2: z = 0 at the last step (t = 0 in code), which returns the mean itself; and ddpm_lib's sigma_t^2 is beta_tilde_t = schedule.posterior_variance[t]",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, variance=s.betas[t], quiet_at=None),),
    ),
    Mistake(
        "last_step_at_paper_t_1",
        "the last step was taken at t = 1, the paper's count",
        "line 3's z = 0 is for the paper's t = 1, which is code index t = 0: add sigma_t z whenever t > 0",
        (
            lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, quiet_at=1),
            lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, variance=s.betas[t], quiet_at=1),
        ),
    ),
    Mistake(
        "variance_at_t_minus_1",
        "sigma_t was read at t - 1",
        "sigma_t^2 is beta_tilde at t itself, schedule.posterior_variance[t]; at t - 1 it is the next step's, and 0 at code t = 1",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, variance=s.posterior_variance[t - 1]),),
    ),
    Mistake(
        "noise_never_added",
        "no fresh noise was added",
        "line 4 adds sigma_t z at every step but the last (t > 0 in code): the step is a draw from the posterior, not only its mean",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, torch.zeros_like(z), s),),
    ),
    Mistake(
        "sign_flipped",
        "the predicted noise was added instead of subtracted",
        "a step removes part of the noise the network sees: x_t - beta_t / sqrt(1 - alpha_bar_t) * noise_pred",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, eps_sign=+1),),
    ),
    Mistake(
        "parentheses_forgotten",
        "1/sqrt(alpha_t) divides x_t alone (parentheses forgotten?)",
        "1/sqrt(alpha_t) scales the whole bracket: (x_t - beta_t / sqrt(1 - alpha_bar_t) noise_pred) / sqrt(alpha_t)",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, scale_whole_bracket=False),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "the noise's weight divides by sqrt(1 - alpha_bar_t), the whole noise level of x_t (schedule.alpha_bars[t])",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, alpha_bar=s.alphas[t]),),
    ),
    Mistake(
        "alpha_bar_for_alpha",
        "1/sqrt(alpha_bar_t) was used where 1/sqrt(alpha_t) belongs",
        "a step undoes one forward step's shrinking, sqrt(alpha_t) (schedule.alphas[t]), not the whole way's, sqrt(alpha_bar_t)",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, alpha=s.alpha_bars[t]),),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "line 4 has 1/sqrt(alpha_t), sqrt(1 - alpha_bar_t), and sigma_t = sqrt(beta_tilde_t), a standard deviation",
        (
            lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, sigma_root=_root_forgotten),
            lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, root=_root_forgotten),
        ),
    ),
    Mistake(
        "t_off_by_one",
        "the schedule was read at t - 1",
        "t is already a code index (0 .. T-1): schedule.alphas[t], schedule.alpha_bars[t], ...; at t = 0, [t - 1] wraps round to the last step",
        (lambda x_t, t, eps, z, s: _algorithm_2_step(x_t, t, eps, z, s, at=t - 1),),
    ),
    Mistake(
        "x0_hat_clipped",
        "x0_hat was clipped to [-1, 1]",
        "the step is the equation as written; ddpm_lib's sampler clips x0_hat before it (and hands the step a noise guess that agrees), so clip nothing here",
        (lambda x_t, t, eps, z, s: _library_ddpm_step(x_t, t, eps, z, s, clip_x0=True),),
    ),
)


def _ddim_cases(schedule, model):
    """Each jump between the timesteps of a 5-step DDIM run, t -> t_prev, as the library's ``ddim_step`` takes it
    (the run's last step, from t = 0 onto the clean image, has no t_prev and is not asked)."""
    generator, visited = _generator(6), ddim_timesteps(schedule.timesteps, 5)
    inputs = []
    for t, t_prev in itertools.pairwise(visited):
        x_t, noise_pred = _sampler_step_inputs(schedule, t, generator)
        inputs.append((f"t = {t} -> {t_prev}", (x_t, t, t_prev, noise_pred, schedule)))
    return _cases(
        inputs,
        ("x_t", "t", "t_prev", "noise_pred", "schedule"),
        lambda x_t, t, t_prev, noise_pred, s: _library_step(ddim_step, x_t, t, t_prev, noise_pred, None, s),
        linear_in=("x_t", "noise_pred"),
    )


def _ddim_jump(
    x_t, eps, alpha_bar, alpha_bar_prev, *, unrooted=(), x0_hat_sign=-1, direction_sign=+1, direction_level=None, direction=True,
    noised_back=True, clipped=False,
):  # fmt: skip
    """Eq. 12 with eta = 0 built from the given pieces; the defaults are the right ones:
    x0_hat = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) eps.

    unrooted: which weights lose their square root, among "1 - alpha_bar", "alpha_bar" (in x0_hat),
    "alpha_bar_prev" and "1 - alpha_bar_prev" (in the jump); direction_level: the alpha_bar whose noise level the
    direction term takes (right: alpha_bar_prev); direction=False leaves that term out; noised_back=False returns x0_hat;
    clipped=True clamps x0_hat to [-1, 1] and keeps the noise guess as it came.
    """

    def weight(name, value):
        return value if name in unrooted else value.sqrt()

    x0_hat = (x_t + x0_hat_sign * weight("1 - alpha_bar", 1 - alpha_bar) * eps) / weight("alpha_bar", alpha_bar)
    x0_hat = x0_hat.clamp(-1, 1) if clipped else x0_hat
    if not noised_back:
        return x0_hat
    level = alpha_bar_prev if direction_level is None else direction_level
    direction_term = direction_sign * weight("1 - alpha_bar_prev", 1 - level) * eps if direction else 0.0
    return weight("alpha_bar_prev", alpha_bar_prev) * x0_hat + direction_term


DDIM_WEIGHTS = ("1 - alpha_bar", "alpha_bar", "alpha_bar_prev", "1 - alpha_bar_prev")

DDIM_STEP_MISTAKES = (
    Mistake(
        "direction_left_out",
        "the direction term, + sqrt(1 - alpha_bar_prev) noise_pred, was left out",
        "eq. 12 puts the guessed noise back at t_prev's level; without it each jump lands on a shrunken clean guess",
        (lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], direction=False),),
    ),
    Mistake(
        "x0_hat_returned",
        "x0_hat itself was returned",
        "x0_hat is the guess of the clean digit; eq. 12 then noises it back to t_prev: sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) noise_pred",
        (lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], noised_back=False),),
    ),
    Mistake(
        "direction_at_t_level",
        "the direction term used x_t's noise level, sqrt(1 - alpha_bar_t), where t_prev's belongs",
        "the guessed noise is put back at the level of t_prev: + sqrt(1 - alpha_bar_prev) noise_pred, with alpha_bar_prev = schedule.alpha_bars[t_prev]",
        (lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], direction_level=s.alpha_bars[t]),),
    ),
    Mistake(
        "neighbour_for_t_prev",
        "alpha_bar_{t-1}, DDPM's next step, was used instead of alpha_bar at t_prev",
        "DDIM jumps straight from t to t_prev: use schedule.alpha_bars[t_prev]",
        (lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars_prev[t]),),
    ),
    Mistake(
        "t_prev_off_by_one",
        "alpha_bar was read one step before t_prev",
        "t_prev is a code index like t: schedule.alpha_bars[t_prev], not alpha_bars_prev[t_prev] or alpha_bars[t_prev - 1]",
        (
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars_prev[t_prev]),
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev - 1]),
        ),
    ),
    Mistake(
        "t_and_t_prev_swapped",
        "t and t_prev swapped roles",
        "x0_hat reads alpha_bar at t, where x_t is, and the jump lands at t_prev: alpha_bar_prev = schedule.alpha_bars[t_prev]",
        (lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t_prev], s.alpha_bars[t]),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "both x0_hat and the jump to t_prev use alpha_bar (schedule.alpha_bars), the noise level reached from x_0",
        (
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alphas[t], s.alphas[t_prev]),
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alphas[t], s.alpha_bars[t_prev]),
        ),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "every weight in eq. 12 is a square root: sqrt(alpha_bar), sqrt(1 - alpha_bar), at t and at t_prev",
        tuple(
            lambda x_t, t, t_prev, eps, s, weight=weight: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], unrooted=(weight,))
            for weight in DDIM_WEIGHTS
        ),
    ),
    Mistake(
        "sign_flipped",
        "a sign is flipped",
        "x0_hat = (x_t - sqrt(1 - alpha_bar_t) noise_pred) / sqrt(alpha_bar_t), and the step adds + sqrt(1 - alpha_bar_prev) noise_pred back",
        (
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], x0_hat_sign=+1),
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], direction_sign=-1),
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], x0_hat_sign=+1, direction_sign=-1),
        ),
    ),
    Mistake(
        "x0_hat_clipped",
        "x0_hat was clipped to [-1, 1]",
        "the step is the equation as written; ddpm_lib's sampler clips x0_hat before it (and hands the step a noise guess that agrees), so clip nothing here",
        (
            lambda x_t, t, t_prev, eps, s: _ddim_jump(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], clipped=True),
            lambda x_t, t, t_prev, eps, s: _library_step(ddim_step, x_t, t, t_prev, eps, None, s, clip_x0=True),
        ),
    ),
)


# --------------------------------------------------------------------------- guided_noise


class _TwoAnswerNetwork(nn.Module):
    """A class-conditional stand-in: told a digit it says eps_label, told nothing it says eps_nothing."""

    conditional = True
    null_label = 10

    def __init__(self, eps_label, eps_nothing):
        super().__init__()
        self.eps_label, self.eps_nothing = eps_label, eps_nothing

    def forward(self, x_t, t, labels):
        rows = torch.arange(len(x_t)) % len(self.eps_label)  # guided_noise may ask about a doubled batch
        told = (labels != self.null_label).view(-1, 1, 1, 1)
        return torch.where(told, self.eps_label[rows], self.eps_nothing[rows])


def _guidance_cases(schedule, model):
    generator = _generator(7)
    cases = []
    for w in (0.0, 1.0, 2.0, 4.5):
        eps_label, eps_nothing = _normal(generator), _normal(generator)
        x_t, t, labels = torch.zeros((BATCH, 1, 28, 28)), torch.zeros(BATCH, dtype=torch.long), torch.arange(BATCH)
        expected = library_guided_noise(_TwoAnswerNetwork(eps_label, eps_nothing), x_t, t, Guidance(labels, w))
        cases.append(Case(f"w = {w:g}", (eps_label, eps_nothing, w), expected))
    return cases


GUIDED_NOISE_MISTAKES = (
    Mistake(
        "paper_convention",
        "Ho & Salimans' form was used, eps_label + w (eps_label - eps_nothing)",
        "the paper's w' is our w - 1; here w = 1 must give eps_label exactly: start from eps_nothing",
        (lambda eps_label, eps_nothing, w: eps_label + w * (eps_label - eps_nothing),),
    ),
    Mistake(
        "roles_swapped",
        "eps_label and eps_nothing swapped roles",
        "start from the prediction told nothing, and step w times along (eps_label - eps_nothing): w = 0 must give eps_nothing",
        (lambda eps_label, eps_nothing, w: eps_label + w * (eps_nothing - eps_label),),
    ),
    Mistake(
        "direction_reversed",
        "the guidance points away from the label",
        "the difference is eps_label - eps_nothing, the direction the label pulls in",
        (lambda eps_label, eps_nothing, w: eps_nothing + w * (eps_nothing - eps_label),),
    ),
    Mistake(
        "parentheses_forgotten",
        "w multiplies eps_label alone (parentheses forgotten?)",
        "w scales the whole difference: eps_nothing + w * (eps_label - eps_nothing)",
        (lambda eps_label, eps_nothing, w: eps_nothing + w * eps_label - eps_nothing,),
    ),
    Mistake(
        "starting_point_left_out",
        "eps_nothing, the starting point, was left out",
        "guidance starts from the prediction told nothing and adds w times the difference: eps_nothing + w * (eps_label - eps_nothing)",
        (lambda eps_label, eps_nothing, w: w * (eps_label - eps_nothing),),
    ),
)


# --------------------------------------------------------------------------- noise_from_score


def _noise_from_score_cases(schedule, model):
    generator = _generator(9)
    cases = []
    for t in (0, schedule.timesteps // 4, schedule.timesteps // 2, schedule.timesteps - 1):
        alpha_bar = float(schedule.alpha_bars[t])
        x_t = 2 * torch.randn((6, 2), generator=generator, dtype=torch.float64)
        score = torch.from_numpy(THREE_CLASSES.noised(alpha_bar).score(x_t.numpy()))
        expected = torch.from_numpy(THREE_CLASSES.best_noise_prediction(x_t.numpy(), alpha_bar)).float()
        cases.append(Case(f"alpha_bar = {alpha_bar:.4g}", (score, torch.tensor(alpha_bar, dtype=torch.float64)), expected))
    return cases


NOISE_FROM_SCORE_MISTAKES = (
    Mistake(
        "sign_forgotten",
        "the minus sign was forgotten",
        "the score points towards the data, the noise away from it: eps = -sqrt(1 - alpha_bar) * score",
        (lambda score, alpha_bar: (1 - alpha_bar).sqrt() * score,),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "sqrt(1 - alpha_bar) is the standard deviation of the noise in x_t, not its variance",
        (lambda score, alpha_bar: -(1 - alpha_bar) * score,),
    ),
    Mistake(
        "alpha_bar_for_one_minus",
        "alpha_bar was used where 1 - alpha_bar belongs",
        "the noise's share of x_t's variance is 1 - alpha_bar; alpha_bar is the digit's",
        (lambda score, alpha_bar: -alpha_bar.sqrt() * score,),
    ),
    Mistake(
        "divided_not_multiplied",
        "the score was divided by sqrt(1 - alpha_bar) instead of multiplied",
        "score = -eps / sqrt(1 - alpha_bar), so solving for eps multiplies: eps = -sqrt(1 - alpha_bar) * score",
        (lambda score, alpha_bar: -score / (1 - alpha_bar).sqrt(), lambda score, alpha_bar: score / (1 - alpha_bar).sqrt()),
    ),
)


# --------------------------------------------------------------------------- the table


_COMPARE_HINT = "print the factors your code uses at that t next to the equation's, e.g. schedule.alpha_bars[t]"

EXERCISES = {
    exercise.name: exercise
    for exercise in (
        Exercise(
            "alpha_bars",
            "alpha_bars(betas)",
            _alpha_bars_cases,
            ALPHA_BARS_MISTAKES,
            "print your first three values beside 1 - beta_1, (1 - beta_1)(1 - beta_2), ... computed by hand",
        ),
        Exercise(
            "q_sample",
            "q_sample(x0, t, noise, schedule)",
            _q_sample_cases,
            Q_SAMPLE_MISTAKES,
            _COMPARE_HINT,
            coefficients={"x0": "sqrt(alpha_bar_t)", "noise": "sqrt(1 - alpha_bar_t)"},
            draws_hint="use the noise it is handed: the caller draws it, so that one seed gives one x_t",
        ),
        Exercise(
            "training_loss",
            "training_loss(model, x0, t, noise, schedule)",
            _training_loss_cases,
            TRAINING_LOSS_MISTAKES,
            "noise x0 to x_t with t and noise, ask model(x_t, t), and return the mean squared difference from noise as one number",
            draws_hint="use the t and the noise it is handed: the trainer draws them, so that one seed gives one run",
            needs_gradient=True,
        ),
        Exercise(
            "v_target",
            "v_target(x0, t, noise, schedule)",
            _v_target_cases,
            V_TARGET_MISTAKES,
            _COMPARE_HINT,
            coefficients={"noise": "sqrt(alpha_bar_t)", "x0": "-sqrt(1 - alpha_bar_t)"},
            draws_hint="use the noise it is handed: the trainer draws it, and v must describe that very noise",
        ),
        Exercise(
            "posterior_mean",
            "posterior_mean(x0, x_t, t, schedule)",
            _posterior_mean_cases,
            POSTERIOR_MEAN_MISTAKES,
            _COMPARE_HINT,
            coefficients={
                "x0": "sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)",
                "x_t": "sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)",
            },
        ),
        Exercise(
            "ddpm_step",
            "ddpm_step(x_t, t, noise_pred, z, schedule)",
            _ddpm_cases,
            DDPM_STEP_MISTAKES,
            _COMPARE_HINT,
            coefficients={
                "x_t": "1 / sqrt(alpha_t)",
                "noise_pred": "-beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t))",
                "z": "sigma_t = sqrt(beta_tilde_t) (schedule.posterior_variance[t]), and 0 at the last step, t = 0",
            },
            draws_hint="use the z it is handed (line 3): the sampler draws it, so that one seed gives one set of digits",
        ),
        Exercise(
            "ddim_step",
            "ddim_step(x_t, t, t_prev, noise_pred, schedule)",
            _ddim_cases,
            DDIM_STEP_MISTAKES,
            _COMPARE_HINT,
            coefficients={
                "x_t": "sqrt(alpha_bar_prev) / sqrt(alpha_bar_t), through x0_hat",
                "noise_pred": "sqrt(1 - alpha_bar_prev) - sqrt(alpha_bar_prev) sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t): the direction term, less what x0_hat took out",
            },
            draws_hint="with eta = 0 a DDIM step adds no fresh noise: drop the term that draws it (torch.randn_like)",
        ),
        Exercise(
            "guided_noise",
            "guided_noise(eps_label, eps_nothing, w)",
            _guidance_cases,
            GUIDED_NOISE_MISTAKES,
            "try w = 0 and w = 1 by hand: they must give eps_nothing and eps_label",
        ),
        Exercise(
            "noise_from_score",
            "noise_from_score(score, alpha_bar)",
            _noise_from_score_cases,
            NOISE_FROM_SCORE_MISTAKES,
            "one factor, the noise's standard deviation in x_t, and one sign",
        ),
    )
}


# --------------------------------------------------------------------------- the checker


class _NotAttempted(Exception):
    pass


class _Refused(Exception):
    """The student's function could not be compared at a case: it raised, changed an input, or returned no tensor."""

    def __init__(self, where: str, error: Exception | None = None, changed: str | None = None, returned: str | None = None):
        super().__init__(where)
        self.where, self.error, self.changed, self.returned = where, error, changed, returned


def _call(function: Callable, case: Case, arguments: list[str]):
    """The function's answer as a float tensor; what stops a comparison raised as ``_Refused`` with the case."""
    # Fresh copies: a function that changes its inputs in place must not spoil the next comparison.
    given = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args)
    try:
        with torch.no_grad():
            answer = function(*given)
    except NotImplementedError as error:
        raise _NotAttempted from error
    except Exception as error:  # anything a student's code raises is reported, not re-raised
        raise _Refused(case.label, error=error) from error
    if answer is Ellipsis or answer is None:
        raise _NotAttempted
    for name, before, after in zip(arguments, case.args, given):
        if isinstance(before, torch.Tensor) and not torch.equal(before, after):
            raise _Refused(case.label, changed=name)
    try:
        answer = torch.as_tensor(answer).detach().float()
    except Exception as error:
        raise _Refused(case.label, returned=type(answer).__name__) from error
    if case.expected.dim() == 0 and answer.numel() == 1:
        answer = answer.reshape(())  # a loss as a float, or as a tensor of shape (1,), is still one number
    return answer.to(case.expected.device)


def _close(answer: torch.Tensor, expected: torch.Tensor, scale: str = "whole") -> bool:
    if answer.shape != expected.shape:
        return False
    if scale == "each":
        bound = expected.abs()
    elif scale == "term":
        bound = expected.abs().max().clamp(min=ZERO_TERM_SCALE)
    else:
        bound = 1 + expected.abs().max()
    return bool(((answer - expected).abs() <= TOLERANCE * bound).all())  # NaN is never close


def _identical(first: torch.Tensor, second: torch.Tensor) -> bool:
    """The same numbers twice (NaN where NaN): a deterministic function on the same inputs gives exactly that."""
    return first.shape == second.shape and bool(((first == second) | (first.isnan() & second.isnan())).all())


def _matches(mistake: Mistake, cases: list[Case], answers: list[torch.Tensor], right: list[bool], arguments: list[str]) -> bool:
    """Some version of the mistake gives the student's answer at every case where it is wrong, and at least one is.

    Where the student is right, the version must be right too (many mistakes change nothing at some t:
    alpha_bars[t - 1] is only wrong at t = 0), so that a mistake in one coefficient is not named after a
    version that also spoils the other.
    """
    for version in mistake.versions:
        try:
            wrong = [_call(version, case, arguments) for case in cases]
        except (_Refused, _NotAttempted):
            continue
        same = [_close(answer, w, case.scale) for answer, w, case in zip(answers, wrong, cases)]
        version_right = [_close(w, case.expected, case.scale) for w, case in zip(wrong, cases)]
        if all(s or (r and v) for s, r, v in zip(same, right, version_right)) and any(s and not r for s, r in zip(same, right)):
            return True
    return False


_BROADCAST_HINT = "a value looked up per image has shape (n,); .view(-1, 1, 1, 1) makes it broadcast over images of shape (n, 1, 28, 28)"


def _exception_hint(error: Exception) -> str:
    text = str(error)
    if "must match the size" in text or "broadcast" in text:
        return f" Hint: {_BROADCAST_HINT}."
    if isinstance(error, IndexError) or "out of bounds" in text:
        return " Hint: code indices run from 0 to T-1, so t + 1 runs past the end at t = T-1."
    return ""


def _refusal(name: str, refused: _Refused) -> CheckResult:
    if refused.changed:
        arg = refused.changed
        message = (
            f"✗ {name} changed its input {arg} in place at {refused.where}. "
            f"Hint: the caller still needs {arg} as it was: compute a new tensor ({arg} - ..., not {arg} -= ... or {arg}.sub_(...))."
        )
        return CheckResult(name, "wrong", message, "changed_in_place")
    if refused.returned:
        return CheckResult(name, "wrong", f"✗ {name} returned a {refused.returned} at {refused.where}: return one tensor.", "not_a_tensor")
    error = refused.error
    first_line = (str(error).strip().splitlines() or [""])[0][:160]
    return CheckResult(name, "error", f"✗ {name} raised {type(error).__name__} at {refused.where}: {first_line}.{_exception_hint(error)}")


def _shape_hint(answer: torch.Tensor, expected: torch.Tensor) -> str:
    if expected.dim() == 0:
        return " Hint: the loss is one number: average over the batch as well (.mean())."
    if answer.numel() > expected.numel():
        return f" Hint: {_BROADCAST_HINT}."
    one_image = answer.shape == expected.shape[1:] or (answer.dim() == expected.dim() and answer.shape[0] == 1)
    if one_image and expected.dim() > 1 and expected.shape[0] > 1:
        return f" Hint: one image came back where the batch has {expected.shape[0]}: keep the batch dimension (no [0], no .mean(0))."
    return ""


def _one_image_repeated(answer: torch.Tensor, expected: torch.Tensor) -> bool:
    """Every image of the answer is the first one, a picture and not one number everywhere, where ddpm_lib's images differ."""
    if answer.dim() < 2 or answer.shape[0] < 2 or answer.shape != expected.shape:
        return False
    first = answer[:1]
    return bool((answer == first).all()) and not bool((first == first.flatten()[0]).all()) and not bool((expected == expected[:1]).all())


def _term_hint(exercise: Exercise, cases: list[Case], right: list[bool]) -> str | None:
    """Where some terms, each compared alone, are right and others wrong: the wrong ones, with their coefficients."""
    if not exercise.coefficients:
        return None
    terms: dict[str, bool] = {}
    for case, ok in zip(cases, right):
        if case.alone is not None:
            terms[case.alone] = terms.get(case.alone, True) and ok
    wrong = [term for term, ok in terms.items() if not ok]
    fine = [term for term, ok in terms.items() if ok]
    if not wrong or not fine:
        return None

    def the_terms_in(names):
        return f"the term{'s' if len(names) > 1 else ''} in {' and '.join(names)}"

    coefficients = "; ".join(f"{term}'s coefficient is {exercise.coefficients[term]}" for term in wrong)
    return (
        f"each term alone (the other inputs set to 0), {the_terms_in(wrong)} came out wrong and {the_terms_in(fine)} right: {coefficients}"
    )


def check(name: str, function: Callable, *, schedule: NoiseSchedule | None = None, model: nn.Module | None = None) -> CheckResult:
    """Run the student's ``function`` for exercise ``name`` and say, in one line, whether it is right.

    ``schedule``: the NoiseSchedule to test with (default: linear, T = 1000). ``model``: for
    training_loss only, the network its batches are asked about (default: a small seeded untrained one).
    Never raises because of the student's code, and leaves the caller's random numbers as they were.
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; there are {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    cases = exercise.make_cases(schedule if schedule is not None else NoiseSchedule(), model)
    with torch.random.fork_rng(devices=[]):  # random numbers the student's code draws leave the notebook's alone
        return _verdict(exercise, function, cases)


def _verdict(exercise: Exercise, function: Callable, cases: list[Case]) -> CheckResult:
    name, arguments = exercise.name, exercise.arguments
    try:
        answers = [_call(function, case, arguments) for case in cases]
        again = [_call(function, case, arguments) for case in cases]
    except _NotAttempted:
        return CheckResult(name, "not attempted", f"… {name}: not attempted yet — replace the ... with your code")
    except _Refused as refused:
        return _refusal(name, refused)

    for case, answer, repeated in zip(cases, answers, again):
        if not _identical(answer, repeated):
            message = (
                f"✗ {name} gave two different answers to the same inputs at {case.label}: it draws random numbers of its own. "
                f"Hint: {exercise.draws_hint}."
            )
            return CheckResult(name, "wrong", message, "draws_its_own_noise")

    right = [_close(answer, case.expected, case.scale) for answer, case in zip(answers, cases)]
    if all(right):
        if exercise.needs_gradient and not _gives_a_gradient(function, cases[-1]):
            message = (
                f"✗ {name} gives the right number, but no gradient to train with. Hint: return the tensor itself, "
                f"without .item(), .detach() or torch.no_grad(): the trainer calls .backward() on it."
            )
            return CheckResult(name, "wrong", message, "no_gradient")
        wheres = list(dict.fromkeys(case.where for case in cases))
        term_by_term = ", each whole and term by term" if any(case.alone for case in cases) else ""
        return CheckResult(name, "right", f"✓ {name} matches ddpm_lib on {len(cases)} cases: {', '.join(wheres)}{term_by_term}")

    for mistake in exercise.mistakes:
        if _matches(mistake, cases, answers, right, arguments):
            return CheckResult(name, "wrong", f"✗ {name}: looks like {mistake.what}. Hint: {mistake.hint}.", mistake.key)
    for answer, case in zip(answers, cases):
        if answer.shape != case.expected.shape:
            message = f"✗ {name} returned shape {tuple(answer.shape)} at {case.label}, expected {tuple(case.expected.shape)}."
            return CheckResult(name, "wrong", message + _shape_hint(answer, case.expected))

    failing = {case.where for case, ok in zip(cases, right) if not ok}
    failed = [where for where in dict.fromkeys(case.where for case in cases) if where in failing]
    if not all(torch.isfinite(answer).all() for answer in answers):
        return CheckResult(
            name,
            "wrong",
            f"✗ {name} gives inf or NaN (failing at {', '.join(failed)}). Hint: a division by zero, or the root of a negative number?",
        )
    for answer, case, ok in zip(answers, cases, right):
        if not ok and _one_image_repeated(answer, case.expected):
            message = (
                f"✗ {name} returned one image repeated for the whole batch at {case.label}. Hint: each image has its own inputs "
                f"and answer: was one image's value (t[0], x_t[0]) used for all, or the batch averaged (.mean(0))?"
            )
            return CheckResult(name, "wrong", message)
    # Compared as shown (two significant digits), the first case wins a tie: a difference of 0.5 at one t
    # and 0.5 plus a rounding error at another must name the same case on every CPU.
    shown = [float(f"{(answer - case.expected).abs().max().item():.2g}") for answer, case in zip(answers, cases)]
    worst = shown.index(max(shown))
    hint = _term_hint(exercise, cases, right) or exercise.hint
    message = (
        f"✗ {name} differs from ddpm_lib at {', '.join(failed)} (largest difference {shown[worst]:.2g}, at {cases[worst].label}). "
        f"Hint: {hint}."
    )
    return CheckResult(name, "wrong", message)


def _gives_a_gradient(function: Callable, case: Case) -> bool:
    """Whether the function's answer to ``case`` can be differentiated (its network's weights require gradients)."""
    given = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args)
    try:
        with torch.enable_grad():
            answer = function(*given)
    except Exception:  # it answered without gradients; with them it cannot be trained either
        return False
    return isinstance(answer, torch.Tensor) and answer.requires_grad


# --------------------------------------------------------------------------- the student's code, running


@dataclass(frozen=True, repr=False)
class Choice:
    """What a notebook runs for an exercise: the student's function once ``check`` accepts it, else ddpm_lib's.

    use: in the form ddpm_lib's machinery takes: for ddpm_step and ddim_step a ``Sampler`` for
    ``sampling.sample``; for training_loss a loss function with ``objective.diffusion_loss``'s
    signature for ``Trainer(loss_function=...)``. Its repr is the one line the notebook prints.
    """

    exercise: str
    yours: bool
    use: object
    message: str

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _your_ddpm_step(yours: Callable) -> Callable:
    """The student's ddpm_step(x_t, t, noise_pred, z, schedule) as a ``sampling.StepFunction``."""

    def step(x_t, t, t_prev, prediction, z, schedule, settings, state=None):
        # prediction.noise is the noise guess made to agree with the clipped x0_hat (prediction_from_noise), so line 4
        # written with it is the posterior mean at the clipped guess: the library's step, clipping included. The last
        # step draws no z; the student's code, which must leave it unused there, is handed zeros.
        return yours(x_t, t, prediction.noise, torch.zeros_like(x_t) if z is None else z, schedule), state

    return step


def _your_ddim_step(yours: Callable) -> Callable:
    """The student's ddim_step(x_t, t, t_prev, noise_pred, schedule), eq. 12 at eta = 0, as a ``sampling.StepFunction``."""

    def step(x_t, t, t_prev, prediction, z, schedule, settings, state=None):
        if settings.eta != 0:
            raise ValueError(f"your ddim_step is eq. 12 with eta = 0; run it with eta = 0, not {settings.eta:g}")
        if t_prev is None:
            # The last step lands on clean data, alpha_bar = 1, which no index of the schedule holds: the
            # library's step takes it, and returns x0_hat itself.
            return ddim_step(x_t, t, t_prev, prediction, z, schedule, settings, state)
        # As for DDPM: the noise guess agrees with the clipped x0_hat, from which the student's formula starts.
        return yours(x_t, t, t_prev, prediction.noise, schedule), state

    return step


def _your_training_loss(yours: Callable) -> Callable:
    """The student's training_loss(model, x0, t, noise, schedule), L_simple, with ``diffusion_loss``'s signature."""

    def loss(model, schedule, x0, t, noise, labels=None, objective=L_SIMPLE):
        if labels is not None or (objective.prediction, objective.weighting) != (L_SIMPLE.prediction, L_SIMPLE.weighting):
            raise ValueError(
                "your training_loss is L_simple, for a network without labels: train it with prediction='eps', "
                "loss_weighting='uniform' and no classes"
            )
        return yours(model, x0, t, noise, schedule)

    return loss


@dataclass(frozen=True)
class _Runnable:
    """An exercise whose answer can do ddpm_lib's work: how to hand it over, and what runs while it is not right."""

    library: Callable[[], object]  # ddpm_lib's own, in the form its machinery takes
    adapt: Callable[[Callable], object]  # the student's function, in that form
    library_name: str
    done: str  # what the run does with it, e.g. "drawn"


RUNNABLE = {
    "ddpm_step": _Runnable(
        lambda: get_sampler("ddpm"), lambda yours: replace(get_sampler("ddpm"), step=_your_ddpm_step(yours)), "ddpm_step", "drawn"
    ),
    "ddim_step": _Runnable(
        lambda: get_sampler("ddim"), lambda yours: replace(get_sampler("ddim"), step=_your_ddim_step(yours)), "ddim_step", "drawn"
    ),
    "training_loss": _Runnable(lambda: diffusion_loss, _your_training_loss, "diffusion_loss", "trained"),
}


def yours_or_ddpm_lib(name: str, function: Callable) -> Choice:
    """The student's ``function`` for exercise ``name`` if ``check`` accepts it, else ddpm_lib's, with the line saying which.

    For ddpm_step and ddim_step, ``choice.use`` is the registered sampler with the student's step in it (same
    timesteps, same noise draws), so a run with one seed draws the same digits either way, up to rounding.
    """
    if name not in RUNNABLE:
        raise KeyError(f"no exercise {name!r} runs in ddpm_lib; these do: {', '.join(RUNNABLE)}")
    runnable, result = RUNNABLE[name], check(name, function)
    if result.passed:
        return Choice(name, True, runnable.adapt(function), f"{runnable.done} with your {name}")
    why = "is not attempted yet" if result.status == "not attempted" else "does not pass check yet"
    return Choice(name, False, runnable.library(), f"{runnable.done} with ddpm_lib's {runnable.library_name}: your {name} {why}")
