"""DPM-Solver++ (2M) against the exact solution of the probability-flow ODE, and its order of accuracy.

The independent reference: for Gaussian data, x_0 ~ N(mu, s^2) in every pixel independently, everything is
known in closed form (with abar_t the schedule's alpha_bar_t, v_t = abar_t s^2 + 1 - abar_t the variance of x_t):

- the best noise prediction, E[eps | x_t] = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mu) / v_t, which the
  scripted network below returns (clip_x0 off, so that nothing but the solver acts);
- the probability-flow ODE, which keeps the standardised value (x_t - sqrt(abar_t) mu) / sqrt(v_t) of each
  pixel fixed: its exact state at any t follows from x_T;
- the posterior mean E[x_0 | x_t] = mu + sqrt(abar_t) s^2 / v_t (x_t - sqrt(abar_t) mu), which is what a
  first-order last step (to alpha_bar = 1) returns from x_t when the network is exact.

Both samplers end with that first-order step from the last timestep they visit, so the reference is the
exact ODE state at the last visited t followed by the exact posterior mean there: what remains between
a run and the reference is the solver's discretisation error alone. Fitting log(error) against
log(steps) gives the order: about 2 for DPM-Solver++ (2M), about 1 for DDIM (a first-order solver of the
same ODE). The step counts are large enough for the error to be in its asymptotic regime and small enough
for float32 round-off to stay far below it.

The constants are read from the schedule's float32 alpha_bars and used in float64; the formulas are
written here from the papers (Lu et al. 2022, Song et al. 2021), not taken from ddpm_lib.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from ddpm_lib.sampling import (
    SAMPLER_REGISTRY,
    PreviousPrediction,
    SamplerSettings,
    ddim_step,
    dpm_solver_2m_step,
    evenly_spaced_timesteps,
    get_sampler,
    prediction_from_noise,
    register_sampler,
    sample,
    sample_steps,
)
from ddpm_lib.schedule import NoiseSchedule

MU, S = 0.3, 0.5  # the data's mean and standard deviation, per pixel
EXACT = SamplerSettings(clip_x0=False)


class GaussianDataOracle(nn.Module):
    """E[eps | x_t] for data x_0 ~ N(MU, S^2) per pixel, computed in float64."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the samplers look up the device of the parameters
        self.alpha_bars = schedule.alpha_bars.double()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.alpha_bars[t].view(-1, 1, 1, 1)
        variance = alpha_bar * S**2 + 1 - alpha_bar
        return ((1 - alpha_bar).sqrt() * (x.double() - alpha_bar.sqrt() * MU) / variance).to(x.dtype)


def exact_result(schedule: NoiseSchedule, x_T: torch.Tensor, first_t: int, last_t: int) -> torch.Tensor:
    """The exact ODE state at last_t from x_T at first_t, then the posterior mean E[x_0 | x_t] there."""
    alpha_bars = schedule.alpha_bars.double()

    def variance(t):
        return alpha_bars[t] * S**2 + 1 - alpha_bars[t]

    standardised = (x_T.double() - alpha_bars[first_t].sqrt() * MU) / variance(first_t).sqrt()
    a = alpha_bars[last_t].sqrt()
    x_last = a * MU + variance(last_t).sqrt() * standardised
    return MU + a * S**2 / variance(last_t) * (x_last - a * MU)


def solver_error(sampler: str, schedule: NoiseSchedule, steps: int) -> float:
    """Root mean square difference between the sampler's result (before its final clamp) and the exact one."""
    x_T = torch.randn((4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    run = list(sample_steps(GaussianDataOracle(schedule), schedule, 4, sampler, replace(EXACT, steps=steps), x_T=x_T))
    expected = exact_result(schedule, x_T, run[0].t, run[-1].t)
    return (run[-1].x_prev.double() - expected).pow(2).mean().sqrt().item()


def fitted_order(errors: list[float], steps: list[int]) -> float:
    """Minus the least-squares slope of log(error) against log(steps)."""
    xs, ys = [math.log(k) for k in steps], [math.log(e) for e in errors]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sum((x - x_mean) ** 2 for x in xs)
    return -slope


@pytest.fixture
def solver_on_ddims_grid():
    """The library's DPM-Solver++ (2M) step on DDIM's timesteps, T - 1 down to 0 whatever the step count:
    both solvers then integrate the ODE over one fixed interval, and only the step size changes."""
    solver = replace(get_sampler("dpm_solver"), name="dpm_solver_on_ddims_grid", visits=evenly_spaced_timesteps)
    register_sampler(solver)
    yield solver.name
    del SAMPLER_REGISTRY[solver.name]


def test_the_oracle_is_the_best_noise_prediction():
    # Sanity check of the test's own oracle, by its defining property: for jointly Gaussian (eps, x_t) the
    # error eps - E[eps | x_t] has mean 0 and is uncorrelated with x_t. 200,704 pixel draws per t put the
    # sampling error of both near 0.002; a wrong weight (a square root forgotten, abar for 1 - abar) misses by 0.1 or more.
    schedule = NoiseSchedule("cosine", 1000)
    oracle = GaussianDataOracle(schedule)
    generator = torch.Generator().manual_seed(1)
    x0 = MU + S * torch.randn((256, 1, 28, 28), generator=generator, dtype=torch.float64)
    eps = torch.randn((256, 1, 28, 28), generator=generator, dtype=torch.float64)
    for t in (10, 500, 990):
        alpha_bar = schedule.alpha_bars.double()[t]
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
        residual = eps - oracle(x_t, torch.full((256,), t))
        assert abs(residual.mean().item()) < 0.015, t
        assert abs((residual * (x_t - x_t.mean())).mean().item()) < 0.015, t


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dpm_solver_is_second_order_and_ddim_first_order(kind, solver_on_ddims_grid):
    schedule = NoiseSchedule(kind, 1000)
    steps = [20, 40, 80, 160]
    dpm = [solver_error(solver_on_ddims_grid, schedule, k) for k in steps]
    ddim = [solver_error("ddim", schedule, k) for k in steps]
    assert 1.7 < fitted_order(dpm, steps) < 2.4, dpm
    assert 0.85 < fitted_order(ddim, steps) < 1.2, ddim
    assert dpm[-1] < ddim[-1] / 3  # and at 160 steps much closer to the exact solution


def test_the_registered_sampler_beats_ddim_at_few_steps():
    # The registered sampler with its own timesteps (which end short of t = 0, see ``solver_timesteps``).
    schedule = NoiseSchedule("cosine", 1000)
    for steps in (10, 15, 20):
        assert solver_error("dpm_solver", schedule, steps) < solver_error("ddim", schedule, steps) / 3, steps


# ------------------------------------------------------------- single steps, against Lu et al.'s formulas


def lambda_of(schedule: NoiseSchedule, t: int) -> float:
    """lambda_t = log(alpha_t / sigma_t) in DPM-Solver's notation: alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)."""
    alpha_bar = float(schedule.alpha_bars[t])
    return 0.5 * math.log(alpha_bar / (1 - alpha_bar))


def inputs(schedule: NoiseSchedule, t: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn((3, 1, 28, 28), generator=generator)
    noise = torch.randn((3, 1, 28, 28), generator=generator)
    return x_t, prediction_from_noise(schedule, x_t, t, noise, clip_x0=False)


def test_the_first_step_is_ddim_with_eta_0():
    # Lu et al. (2022), section 4: the first-order DPM-Solver++ step is DDIM's.
    schedule = NoiseSchedule("cosine", 1000)
    x_t, prediction = inputs(schedule, 700, seed=2)
    solver, memory = dpm_solver_2m_step(x_t, 700, 450, prediction, None, schedule, EXACT, None)
    ddim, _ = ddim_step(x_t, 700, 450, prediction, None, schedule, EXACT, None)
    torch.testing.assert_close(solver, ddim, rtol=1e-5, atol=1e-5)
    assert memory.t == 700 and torch.equal(memory.x0, prediction.x0)


def test_a_second_order_step_is_algorithm_2_of_lu_et_al():
    # From t_{i-2} = 800 to t_{i-1} = 600 (first step), then t_{i-1} = 600 to t_i = 350 with r_i = h_{i-1} / h_i,
    # D_i = (1 + 1/(2 r_i)) x0(t_{i-1}) - 1/(2 r_i) x0(t_{i-2}), x_{t_i} = sigma_i / sigma_{i-1} x - alpha_i (e^{-h_i} - 1) D_i.
    schedule = NoiseSchedule("linear", 1000)
    alpha_bars = schedule.alpha_bars.double()
    x_800, first = inputs(schedule, 800, seed=3)
    x_600, memory = dpm_solver_2m_step(x_800, 800, 600, first, None, schedule, EXACT, None)
    noise_600 = torch.randn(x_600.shape, generator=torch.Generator().manual_seed(4))
    second = prediction_from_noise(schedule, x_600, 600, noise_600, clip_x0=False)
    x_350, _ = dpm_solver_2m_step(x_600, 600, 350, second, None, schedule, EXACT, memory)

    h_prev, h = lambda_of(schedule, 600) - lambda_of(schedule, 800), lambda_of(schedule, 350) - lambda_of(schedule, 600)
    r = h_prev / h
    data = (1 + 1 / (2 * r)) * second.x0.double() - 1 / (2 * r) * first.x0.double()
    sigma = (1 - alpha_bars).sqrt()
    expected = sigma[350] / sigma[600] * x_600.double() - alpha_bars[350].sqrt() * (math.exp(-h) - 1) * data
    torch.testing.assert_close(x_350.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_last_step_returns_the_data_prediction():
    schedule = NoiseSchedule("cosine", 1000)
    x_t, prediction = inputs(schedule, 40, seed=5)
    earlier = PreviousPrediction(90, inputs(schedule, 90, seed=6)[1].x0)
    x_0, _ = dpm_solver_2m_step(x_t, 40, None, prediction, None, schedule, EXACT, earlier)
    assert torch.equal(x_0, prediction.x0)  # first order, even with an earlier guess at hand


def test_dpm_solver_draws_no_noise_and_ignores_eta():
    schedule = NoiseSchedule("linear", 50)
    oracle = GaussianDataOracle(schedule)
    x_T = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(7))
    runs = [sample(oracle, schedule, 2, "dpm_solver", 10, seed=seed, eta=eta, x_T=x_T).images for seed, eta in ((0, 0.0), (1, 1.0))]
    assert torch.equal(*runs)
