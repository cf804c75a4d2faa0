"""Exercises with a checker: write the code of an equation, and learn at once whether it is right.

A notebook exercise asks for one small function, shipped as a stub. The cell after it calls
``check(name, function)``, which runs the function on a few seeded inputs, compares each
answer with what ``ddpm_lib`` itself computes, and answers in one line:

    ✓ q_sample matches ddpm_lib on 5 cases: t = 0, t = 1, t = 500, t = 999, mixed t
    ✗ q_sample: looks like alpha_t was used where alpha_bar_t belongs. Hint: ...
    … q_sample: not attempted yet — replace the ... with your code

When an answer is wrong, the checker also runs a few typical wrong solutions (a timestep off by
one, a square root forgotten, a sign flipped, ...) on the same inputs; if the student's answers
agree with one of them, the line names that mistake. The lines contain no timings and no
unseeded numbers, so that nbval can compare them.

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
own steps, ``sampling.ddpm_step`` and ``sampling.ddim_step``, on the same seeded inputs;
``sampling.guided_noise`` asked with a scripted class-conditional network; the closed-form
``GaussianMixture2D.best_noise_prediction`` of notebook 4's 2-D toy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .mixture2d import THREE_CLASSES
from .objective import Objective, diffusion_loss
from .sampling import Guidance, SamplerSettings, ddim_step, ddim_timesteps, ddpm_step, prediction_from_noise
from .sampling import guided_noise as library_guided_noise
from .schedule import SCHEDULE_REGISTRY, NoiseSchedule
from .unet import SimpleUNet, UNetConfig

SEED = 0  # every input the checker makes is drawn from generators seeded from this
BATCH = 4  # images per case: few enough to be instant, more than one so per-image mistakes show
# Answers count as equal within 0.2% of their largest value. Both sides are float32, but the
# library derives its tensors in float64: a student's 1 - alpha_bar_t, with alpha_bar_t = 0.9999
# near t = 0, keeps only three or four digits. Every known mistake misses by far more.
TOLERANCE = 2e-3


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
    """One call of the student's function: the arguments, and ddpm_lib's answer to them."""

    where: str  # how messages name this case, e.g. "t = 0"
    args: tuple
    expected: torch.Tensor
    relative: bool = False  # compare each value within TOLERANCE of itself: for answers spanning many scales


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


# --------------------------------------------------------------------------- alpha_bars


def _alpha_bars_cases(schedule, model):
    """The schedule given, the other registered schedules at the same T, and a short one (T = 10)."""
    others = [kind for kind in SCHEDULE_REGISTRY if kind != schedule.kind]
    schedules = [schedule, *(NoiseSchedule(kind, schedule.timesteps) for kind in others), NoiseSchedule(schedule.kind, 10)]
    # float64 betas, as the registry makes them: the running product over 1000 steps needs the digits.
    # alpha_bar falls from about 1 to 1e-9, so each value is compared with itself, not with the largest.
    return [
        Case(f"{s.kind} (T = {s.timesteps})", (SCHEDULE_REGISTRY[s.kind](s.timesteps),), s.alpha_bars, relative=True) for s in schedules
    ]


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
)


# --------------------------------------------------------------------------- q_sample


def _x0_t_noise_cases(schedule, seed_offset: int, answer: Callable) -> list[Case]:
    """Cases for a function of (x0, t, noise, schedule): seeded digits and noise at each batch of t,
    with ``answer(x0, t, noise)`` as the right result."""
    generator = _generator(seed_offset)
    cases = []
    for where, t in _timestep_batches(schedule):
        x0, noise = _digits(generator), _normal(generator)
        cases.append(Case(where, (x0, t, noise, schedule), answer(x0, t, noise)))
    return cases


def _q_sample_cases(schedule, model):
    return _x0_t_noise_cases(schedule, 1, schedule.q_sample)


def _jump(alpha_bar, x0, noise, root=torch.sqrt, noise_root=None):
    noise_root = noise_root or root
    return root(alpha_bar) * x0 + noise_root(1 - alpha_bar) * noise


def _unchanged(value):
    return value


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
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, root=_unchanged),
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, noise_root=_unchanged),
            lambda x0, t, noise, s: _jump(_per_image(s.alpha_bars, t), x0, noise, root=_unchanged, noise_root=torch.sqrt),
        ),
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


def _training_loss_cases(schedule, model):
    model = model if model is not None else _untrained_network()
    device = next(model.parameters()).device
    schedule = schedule.to(device)
    cases = []
    for k in range(3):
        x0 = _digits(_generator(10 + k)).to(device)
        draws = _generator(20 + k)
        t = torch.randint(0, schedule.timesteps, (BATCH,), generator=draws).to(device)
        noise = torch.randn(x0.shape, generator=draws).to(device)
        expected = diffusion_loss(model, schedule, x0, t, noise)
        cases.append(Case(f"batch {k + 1}", (model, x0, t, noise, schedule), expected))
    return cases


def _squared_error(model, x_in, t, target):
    return (model(x_in, t).float() - target) ** 2


TRAINING_LOSS_MISTAKES = (
    Mistake(
        "summed_not_averaged",
        "the squared errors were summed instead of averaged",
        "L_simple is a mean over the batch and the pixels (F.mse_loss); a sum grows with the batch size and the learning rate would have to shrink with it",
        (lambda m, x0, t, noise, s: _squared_error(m, s.q_sample(x0, t, noise), t, noise).sum(),),
    ),
    Mistake(
        "norm_per_image",
        "each image's squared norm was summed over its pixels, then averaged over the batch",
        "that is ||eps - eps_theta||^2 read literally; ddpm_lib also averages over the 784 pixels (F.mse_loss), which only rescales the loss by 1/784",
        (lambda m, x0, t, noise, s: _squared_error(m, s.q_sample(x0, t, noise), t, noise).sum(dim=(1, 2, 3)).mean(),),
    ),
    Mistake(
        "target_is_x0",
        "the prediction was compared with x0 instead of the noise",
        "the network predicts the noise eps that made x_t, so the target is `noise`",
        (lambda m, x0, t, noise, s: _squared_error(m, s.q_sample(x0, t, noise), t, x0).mean(),),
    ),
    Mistake(
        "network_sees_x0",
        "the network was given x0 instead of x_t",
        "first noise the digit, x_t = q_sample(x0, t, noise), and ask the network about x_t: it must find the noise in it",
        (lambda m, x0, t, noise, s: _squared_error(m, x0, t, noise).mean(),),
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
        (lambda x0, t, noise, s: _velocity(x0, t, noise, s, root=_unchanged),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "v mixes the noise and the digit in the proportions of x_t, which come from alpha_bar_t (schedule.alpha_bars)",
        (lambda x0, t, noise, s: _velocity(x0, t, noise, s, alpha_bar=_per_image(s.alphas, t)),),
    ),
)


# --------------------------------------------------------------------------- posterior_mean


def _posterior_mean_cases(schedule, model):
    generator = _generator(2)
    cases = []
    for where, t in _timestep_batches(schedule):
        x0, x_t = _digits(generator), _normal(generator)
        cases.append(Case(where, (x0, x_t, t, schedule), schedule.posterior(x0, x_t, t)[0]))
    return cases


def _mu_tilde(x0, x_t, t, s, alpha_bar_prev=None, alpha_bar=None, root=torch.sqrt, swap=False):
    """Eq. 7 built from the given pieces; the defaults are the right ones."""
    alpha_bar_prev = _per_image(s.alpha_bars_prev, t) if alpha_bar_prev is None else alpha_bar_prev
    alpha_bar = _per_image(s.alpha_bars, t) if alpha_bar is None else alpha_bar
    beta, alpha = _per_image(s.betas, t), _per_image(s.alphas, t)
    coef_x0 = root(alpha_bar_prev) * beta / (1 - alpha_bar)
    coef_xt = root(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coef_xt * x0 + coef_x0 * x_t if swap else coef_x0 * x0 + coef_xt * x_t


POSTERIOR_MEAN_MISTAKES = (
    Mistake(
        "coefficients_swapped",
        "the coefficients of x_0 and x_t were swapped",
        "x_0's coefficient holds beta_t, x_t's holds 1 - alpha_bar_{t-1}: at large t the mean must stay close to x_t",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, swap=True),),
    ),
    Mistake(
        "alpha_bar_t_for_alpha_bar_prev",
        "alpha_bar_t was used where alpha_bar_{t-1} belongs",
        "the numerators hold alpha_bar_{t-1}, one step earlier: schedule.alpha_bars_prev[t]",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, alpha_bar_prev=_per_image(s.alpha_bars, t)),),
    ),
    Mistake(
        "wraps_around_at_t_0",
        "alpha_bar_{t-1} was read as schedule.alpha_bars[t - 1], which wraps round at t = 0",
        "at t = 0 (the paper's t = 1) alpha_bar_{t-1} is alpha_bar_0 = 1, but alpha_bars[-1] is the last entry: use schedule.alpha_bars_prev[t]",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, alpha_bar_prev=_per_image(s.alpha_bars, t - 1)),),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "eq. 7 has sqrt(alpha_bar_{t-1}) in x_0's coefficient and sqrt(alpha_t) in x_t's",
        (lambda x0, x_t, t, s: _mu_tilde(x0, x_t, t, s, root=_unchanged),),
    ),
)


# --------------------------------------------------------------------------- ddpm_step, ddim_step


def _sampler_step_inputs(schedule: NoiseSchedule, t: int, generator: torch.Generator):
    """x_t and a noise guess at step t as a sampler meets them: a picture inside [-1, 1] noised to t, and the
    noise that made it plus a fixed error (a network's guess is not exact)."""
    picture, noise = _digits(generator) * 0.8, _normal(generator)
    x_t = schedule.q_sample(picture, torch.full((BATCH,), t), noise)
    return x_t, noise + 0.1 * _normal(generator)


def _library_step(step, x_t, t, t_prev, noise_pred, z, schedule):
    """The library's own sampler step from the student's inputs, x0_hat unclipped as the exercises write it."""
    prediction = prediction_from_noise(schedule, x_t, t, noise_pred, clip_x0=False)
    return step(x_t, t, t_prev, prediction, z, schedule, SamplerSettings(clip_x0=False), None)[0]


def _ddpm_cases(schedule, model):
    T, generator = schedule.timesteps, _generator(4)
    cases = []
    for t in (T - 1, T // 2, 1, 0):
        x_t, noise_pred = _sampler_step_inputs(schedule, t, generator)
        z = _normal(generator)
        # At t = 0 (the last step) the library draws no z; the student is handed one all the same, and must not use it.
        expected = _library_step(ddpm_step, x_t, t, t - 1 if t > 0 else None, noise_pred, z if t > 0 else None, schedule)
        cases.append(Case(f"t = {t}", (x_t, t, noise_pred, z, schedule), expected))
    return cases


def _line_4(x_t, eps, z, alpha, alpha_bar, beta, sigma, root=torch.sqrt, sign=-1):
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) + sigma_t z, with the given pieces."""
    return (x_t + sign * beta / root(1 - alpha_bar) * eps) / root(alpha) + sigma * z


def _ddpm_version(x_t, t, eps, z, s, alpha_bar=None, variance=None, noise_at_t_0=False, sign=-1, root=torch.sqrt, sigma_root=torch.sqrt):
    alpha_bar = s.alpha_bars[t] if alpha_bar is None else alpha_bar
    variance = s.posterior_variance[t] if variance is None else variance
    sigma = sigma_root(variance) if t > 0 or noise_at_t_0 else 0.0
    return _line_4(x_t, eps, z, s.alphas[t], alpha_bar, s.betas[t], sigma, root=root, sign=sign)


# Mistakes that touch fewer steps come first: a student with only sigma_t^2 = beta_t is right at
# t = 0, and also "right or noise-at-the-last-step" there, so the narrower reading must win.
DDPM_STEP_MISTAKES = (
    Mistake(
        "variance_beta_t",
        "sigma_t^2 = beta_t was used",
        "the paper allows it, but ddpm_lib uses sigma_t^2 = beta_tilde_t, the posterior's variance: schedule.posterior_variance[t]",
        (lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, variance=s.betas[t]),),
    ),
    Mistake(
        "noise_at_the_last_step",
        "noise was added at the last step",
        "line 3 of Algorithm 2: z = 0 at the last step (t = 0 in code), which returns the mean itself; and ddpm_lib's sigma_t^2 is beta_tilde_t = schedule.posterior_variance[t]",
        (lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, variance=s.betas[t], noise_at_t_0=True),),
    ),
    Mistake(
        "sign_flipped",
        "the predicted noise was added instead of subtracted",
        "a step removes part of the noise the network sees: x_t - beta_t / sqrt(1 - alpha_bar_t) * noise_pred",
        (lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, sign=+1),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "the noise's weight divides by sqrt(1 - alpha_bar_t), the whole noise level of x_t (schedule.alpha_bars[t])",
        (lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, alpha_bar=s.alphas[t]),),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "line 4 has 1/sqrt(alpha_t), sqrt(1 - alpha_bar_t), and sigma_t = sqrt(beta_tilde_t), a standard deviation",
        (
            lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, sigma_root=_unchanged),
            lambda x_t, t, eps, z, s: _ddpm_version(x_t, t, eps, z, s, root=_unchanged),
        ),
    ),
)


def _ddim_cases(schedule, model):
    """Each jump of a 5-step DDIM run, t -> t_prev; the last step, from t = 0 to the clean image, has no t_prev."""
    generator, visited = _generator(6), ddim_timesteps(schedule.timesteps, 5)
    cases = []
    for t, t_prev in itertools.pairwise(visited):
        x_t, noise_pred = _sampler_step_inputs(schedule, t, generator)
        expected = _library_step(ddim_step, x_t, t, t_prev, noise_pred, None, schedule)
        cases.append(Case(f"t = {t} -> {t_prev}", (x_t, t, t_prev, noise_pred, schedule), expected))
    return cases


def _eq_12(x_t, eps, alpha_bar, alpha_bar_prev, roots=(torch.sqrt,) * 4, x0_sign=-1, direction_sign=+1):
    """x0_hat = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar); x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) eps."""
    r1, r2, r3, r4 = roots
    x0_hat = (x_t + x0_sign * r1(1 - alpha_bar) * eps) / r2(alpha_bar)
    return r3(alpha_bar_prev) * x0_hat + direction_sign * r4(1 - alpha_bar_prev) * eps


def _forget_root(k):
    """The four square roots of eq. 12 with the k-th one left out."""
    return tuple(_unchanged if i == k else torch.sqrt for i in range(4))


DDIM_STEP_MISTAKES = (
    Mistake(
        "neighbour_for_t_prev",
        "alpha_bar_{t-1}, DDPM's next step, was used instead of alpha_bar at t_prev",
        "DDIM jumps straight from t to t_prev: use schedule.alpha_bars[t_prev]",
        (lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alpha_bars[t], s.alpha_bars_prev[t]),),
    ),
    Mistake(
        "alpha_t_for_alpha_bar",
        "alpha_t was used where alpha_bar_t belongs",
        "both x0_hat and the jump to t_prev use alpha_bar (schedule.alpha_bars), the noise level reached from x_0",
        (
            lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alphas[t], s.alphas[t_prev]),
            lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alphas[t], s.alpha_bars[t_prev]),
        ),
    ),
    Mistake(
        "sqrt_forgotten",
        "a square root was forgotten",
        "every weight in eq. 12 is a square root: sqrt(alpha_bar), sqrt(1 - alpha_bar), at t and at t_prev",
        tuple(
            lambda x_t, t, t_prev, eps, s, k=k: _eq_12(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], _forget_root(k)) for k in range(4)
        ),
    ),
    Mistake(
        "sign_flipped",
        "a sign is flipped",
        "x0_hat = (x_t - sqrt(1 - alpha_bar_t) noise_pred) / sqrt(alpha_bar_t), and the step adds + sqrt(1 - alpha_bar_prev) noise_pred back",
        (
            lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], x0_sign=+1),
            lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], direction_sign=-1),
            lambda x_t, t, t_prev, eps, s: _eq_12(x_t, eps, s.alpha_bars[t], s.alpha_bars[t_prev], x0_sign=+1, direction_sign=-1),
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
        (lambda score, alpha_bar: -score / (1 - alpha_bar).sqrt(),),
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
        Exercise("q_sample", "q_sample(x0, t, noise, schedule)", _q_sample_cases, Q_SAMPLE_MISTAKES, _COMPARE_HINT),
        Exercise(
            "training_loss",
            "training_loss(model, x0, t, noise, schedule)",
            _training_loss_cases,
            TRAINING_LOSS_MISTAKES,
            "noise x0 to x_t with t and noise, ask model(x_t, t), and return the mean squared difference from noise as one number",
        ),
        Exercise("v_target", "v_target(x0, t, noise, schedule)", _v_target_cases, V_TARGET_MISTAKES, _COMPARE_HINT),
        Exercise("posterior_mean", "posterior_mean(x0, x_t, t, schedule)", _posterior_mean_cases, POSTERIOR_MEAN_MISTAKES, _COMPARE_HINT),
        Exercise("ddpm_step", "ddpm_step(x_t, t, noise_pred, z, schedule)", _ddpm_cases, DDPM_STEP_MISTAKES, _COMPARE_HINT),
        Exercise("ddim_step", "ddim_step(x_t, t, t_prev, noise_pred, schedule)", _ddim_cases, DDIM_STEP_MISTAKES, _COMPARE_HINT),
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


class _Raised(Exception):
    def __init__(self, where: str, error: Exception):
        super().__init__(where)
        self.where, self.error = where, error


def _call(function: Callable, case: Case):
    """The function's answer as a float tensor; its exceptions wrapped with the case that raised them."""
    # Fresh copies: a function that changes its inputs in place must not spoil the next comparison.
    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in case.args)
    try:
        with torch.no_grad():
            answer = function(*args)
    except NotImplementedError as error:
        raise _NotAttempted from error
    except Exception as error:  # anything a student's code raises is reported, not re-raised
        raise _Raised(case.where, error) from error
    if answer is Ellipsis or answer is None:
        raise _NotAttempted
    answer = torch.as_tensor(answer).detach().float()
    if case.expected.dim() == 0 and answer.numel() == 1:
        answer = answer.reshape(())  # a loss as a float, or as a tensor of shape (1,), is still one number
    return answer.to(case.expected.device)


def _close(answer: torch.Tensor, expected: torch.Tensor, relative: bool = False) -> bool:
    if answer.shape != expected.shape:
        return False
    scale = expected.abs() if relative else 1 + expected.abs().max()
    return bool(((answer - expected).abs() <= TOLERANCE * scale).all())  # NaN is never close


def _matches(mistake: Mistake, cases: list[Case], answers: list[torch.Tensor], right: list[bool]) -> bool:
    """Every answer is either right or this mistake, and at least one is this mistake.

    Allowing right answers matters: many mistakes change nothing at some t (alpha_bars[t - 1] is only
    wrong at t = 0, noise at the last step only shows at t = 0).
    """
    for version in mistake.versions:
        try:
            wrong = [_close(answer, _call(version, case), case.relative) for answer, case in zip(answers, cases)]
        except (_Raised, _NotAttempted):
            continue
        if all(r or w for r, w in zip(right, wrong)) and any(w and not r for r, w in zip(right, wrong)):
            return True
    return False


def _exception_hint(error: Exception) -> str:
    text = str(error)
    if "must match the size" in text or "broadcast" in text:
        return (
            " Hint: a value looked up per image has shape (n,); .view(-1, 1, 1, 1) makes it broadcast over images of shape (n, 1, 28, 28)."
        )
    if isinstance(error, IndexError) or "out of bounds" in text:
        return " Hint: code indices run from 0 to T-1, so t + 1 runs past the end at t = T-1."
    return ""


def check(name: str, function: Callable, *, schedule: NoiseSchedule | None = None, model: nn.Module | None = None) -> CheckResult:
    """Run the student's ``function`` for exercise ``name`` and say, in one line, whether it is right.

    ``schedule``: the NoiseSchedule to test with (default: linear, T = 1000). ``model``: for
    training_loss only, the network to call (default: a small seeded untrained one).
    Never raises because of the student's code.
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; there are {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    cases = exercise.make_cases(schedule if schedule is not None else NoiseSchedule(), model)
    try:
        answers = [_call(function, case) for case in cases]
    except _NotAttempted:
        return CheckResult(name, "not attempted", f"… {name}: not attempted yet — replace the ... with your code")
    except _Raised as raised:
        error = raised.error
        first_line = (str(error).strip().splitlines() or [""])[0][:160]
        message = f"✗ {name} raised {type(error).__name__} at {raised.where}: {first_line}.{_exception_hint(error)}"
        return CheckResult(name, "error", message)

    right = [_close(answer, case.expected, case.relative) for answer, case in zip(answers, cases)]
    if all(right):
        wheres = ", ".join(case.where for case in cases)
        return CheckResult(name, "right", f"✓ {name} matches ddpm_lib on {len(cases)} cases: {wheres}")

    for answer, case in zip(answers, cases):
        if answer.shape != case.expected.shape:
            message = f"✗ {name} returned shape {tuple(answer.shape)} at {case.where}, expected {tuple(case.expected.shape)}."
            return CheckResult(name, "wrong", message)
    for mistake in exercise.mistakes:
        if _matches(mistake, cases, answers, right):
            return CheckResult(name, "wrong", f"✗ {name}: looks like {mistake.what}. Hint: {mistake.hint}.", mistake.key)

    failed = [case.where for case, ok in zip(cases, right) if not ok]
    if not all(torch.isfinite(answer).all() for answer in answers):
        return CheckResult(
            name,
            "wrong",
            f"✗ {name} gives inf or NaN (failing at {', '.join(failed)}). Hint: a division by zero, or the root of a negative number?",
        )
    # Compared as shown (two significant digits), the first case wins a tie: a difference of 0.5 at one t
    # and 0.5 plus a rounding error at another must name the same case on every CPU.
    shown = [float(f"{(answer - case.expected).abs().max().item():.2g}") for answer, case in zip(answers, cases)]
    worst = shown.index(max(shown))
    message = (
        f"✗ {name} differs from ddpm_lib at {', '.join(failed)} (largest difference {shown[worst]:.2g}, at {cases[worst].where}). "
        f"Hint: {exercise.hint}."
    )
    return CheckResult(name, "wrong", message)
