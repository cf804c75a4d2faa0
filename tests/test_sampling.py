"""DDPM and DDIM samplers checked against the papers' update rules, written out here.

References, all independent of ddpm_lib's own formulas:
- an oracle noise predictor: for data that is a single image x0*, the optimal
  eps(x_t, t) = (x_t - sqrt(abar_t) x0*) / sqrt(1 - abar_t); with it both samplers
  must land on x0*;
- Ho et al. (2020) Algorithm 2, step by step: mean 1/sqrt(alpha_t) (x_t - beta_t /
  sqrt(1 - abar_t) eps), variance beta_tilde_t (the posterior variance), with the
  noise draws reproduced from the seed;
- Song et al. (2021) eq. 12 for DDIM, and the identity sigma_t^2(eta = 1) = beta_tilde_t:
  exactly, as DDIM(eta = 1) over all T steps reproducing a DDPM run from the same
  seed, and as the empirical variance of many sampled steps;
- bookkeeping: seeds, trajectories and the steps they are made from, the timestep subsets, bad arguments.

Schedule constants are recomputed from betas in float64 (``Consts``), not read
from the library's derived buffers. T = 50 keeps every test fast.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ddpm_lib.sampling import (
    SAMPLER_REGISTRY,
    SamplerSettings,
    Trajectory,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    predict,
    sample,
    sample_steps,
    solver_timesteps,
)
from ddpm_lib.schedule import NoiseSchedule

T = 50


class Consts:
    """alpha_t, abar_t, beta_tilde_t from the betas alone, float64, code-indexed."""

    def __init__(self, schedule: NoiseSchedule):
        self.beta = schedule.betas.double().tolist()
        self.alpha = [1 - b for b in self.beta]
        self.abar, acc = [], 1.0
        for a in self.alpha:
            acc *= a
            self.abar.append(acc)
        self.abar_prev = [1.0] + self.abar[:-1]
        self.beta_tilde = [(1 - p) / (1 - a) * b for p, a, b in zip(self.abar_prev, self.abar, self.beta)]


def x0_star() -> torch.Tensor:
    """The single data point: a fixed ramp inside [-1, 1]."""
    return torch.linspace(-0.9, 0.9, 28 * 28).reshape(1, 1, 28, 28)


class PointOracle(nn.Module):
    """Exact eps(x_t, t) for data distribution = delta(x0*); ``wobble`` makes it slightly wrong.

    With wobble w the implied clean image is x0* - w sqrt(1 - abar_t) sin(3 x_t), a
    model whose guess depends on x_t, so that samples depend on the noise.
    """

    def __init__(self, schedule: NoiseSchedule, wobble: float = 0.0):
        super().__init__()
        # The samplers find the device through the first parameter.
        self.anchor = nn.Parameter(torch.zeros(()))
        self.c = Consts(schedule)
        self.wobble = wobble
        self.inputs: list[tuple[int, torch.Tensor]] = []  # (t, x_t) of every call

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert (t == t[0]).all()
        ti = int(t[0])
        self.inputs.append((ti, x.clone()))
        abar = self.c.abar[ti]
        x64 = x.double()
        eps = (x64 - math.sqrt(abar) * x0_star().double()) / math.sqrt(1 - abar)
        eps = eps + self.wobble * math.sqrt(abar) * torch.sin(3 * x64)
        return (eps + 0 * self.anchor).to(x.dtype)


def algorithm2_mean(c: Consts, x_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """Ho et al. Algorithm 2, line 4, without the noise term."""
    return (x_t.double() - c.beta[t] / math.sqrt(1 - c.abar[t]) * eps.double()) / math.sqrt(c.alpha[t])


def ddim_sigma(abar_t: float, abar_prev: float, eta: float) -> float:
    """Song et al. eq. 16."""
    return eta * math.sqrt((1 - abar_prev) / (1 - abar_t)) * math.sqrt(1 - abar_t / abar_prev)


# ---------------------------------------------------------------- the oracle


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta0_with_oracle_returns_the_data_point(clip_x0):
    schedule = NoiseSchedule("linear", T)
    result = ddim_sample(PointOracle(schedule), schedule, n=3, steps=10, eta=0.0, clip_x0=clip_x0)
    torch.testing.assert_close(result.images, x0_star().expand(3, 1, 28, 28), rtol=0, atol=1e-4)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddpm_with_oracle_returns_the_data_point(clip_x0):
    # Every step's x0 guess is x0*, and the last step (t = 1) has zero variance.
    schedule = NoiseSchedule("linear", T)
    result = ddpm_sample(PointOracle(schedule), schedule, n=3, clip_x0=clip_x0)
    torch.testing.assert_close(result.images, x0_star().expand(3, 1, 28, 28), rtol=0, atol=1e-4)


def test_oracle_is_consistent_with_the_forward_process():
    # Sanity check of the test's own oracle: fed q_sample(x0*, t, eps) it returns eps.
    schedule = NoiseSchedule("cosine", T)
    oracle = PointOracle(schedule)
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for t in (0, 20, 49):
        tt = torch.full((4,), t)
        x_t = schedule.q_sample(x0_star().expand(4, 1, 28, 28), tt, noise)
        torch.testing.assert_close(oracle(x_t, tt), noise, rtol=0, atol=1e-3)


# ----------------------------------------------------- one step at a time


def test_ddpm_every_step_is_algorithm_2_with_posterior_variance():
    schedule = NoiseSchedule("linear", T)
    c = Consts(schedule)
    model = PointOracle(schedule, wobble=0.5)
    seed, n = 7, 2
    result = ddpm_sample(model, schedule, n, seed=seed, clip_x0=False, return_trajectory=True)
    traj = result.trajectory
    # Reproduce the sampler's draws: x_T first, then one z per step with t > 1 (paper).
    generator = torch.Generator().manual_seed(seed)
    torch.testing.assert_close(traj.x_t[0], torch.randn((n, 1, 28, 28), generator=generator))
    for k, t in enumerate(traj.timesteps):
        x_t = traj.x_t[k]
        eps = model(x_t, torch.full((n,), t))
        torch.testing.assert_close(traj.noise_pred[k], eps)
        x0_hat = (x_t.double() - math.sqrt(1 - c.abar[t]) * eps.double()) / math.sqrt(c.abar[t])
        torch.testing.assert_close(traj.x0_pred[k].double(), x0_hat, rtol=1e-4, atol=1e-4)
        mean = algorithm2_mean(c, x_t, t, eps)
        if t > 0:
            z = torch.randn((n, 1, 28, 28), generator=generator).double()
            expected = mean + math.sqrt(c.beta_tilde[t]) * z
            torch.testing.assert_close(traj.x_t[k + 1].double(), expected, rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(result.images.double(), mean.clamp(-1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_every_step_is_song_eq_12(eta):
    schedule = NoiseSchedule("cosine", T)
    c = Consts(schedule)
    model = PointOracle(schedule, wobble=0.5)
    seed, n, steps = 3, 2, 10
    result = ddim_sample(model, schedule, n, steps=steps, eta=eta, seed=seed, clip_x0=False, return_trajectory=True)
    traj = result.trajectory
    generator = torch.Generator().manual_seed(seed)
    torch.testing.assert_close(traj.x_t[0], torch.randn((n, 1, 28, 28), generator=generator))
    ts = traj.timesteps
    for k, t in enumerate(ts):
        x_t, eps = traj.x_t[k].double(), traj.noise_pred[k].double()
        torch.testing.assert_close(eps, model(traj.x_t[k], torch.full((n,), t)).double())
        abar = c.abar[t]
        abar_prev = c.abar[ts[k + 1]] if k + 1 < len(ts) else 1.0  # abar_0 = 1 after the last step
        x0_hat = (x_t - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        sigma = ddim_sigma(abar, abar_prev, eta)
        expected = math.sqrt(abar_prev) * x0_hat + math.sqrt(1 - abar_prev - sigma**2) * eps
        if k + 1 < len(ts):
            if eta > 0:
                expected = expected + sigma * torch.randn((n, 1, 28, 28), generator=generator).double()
            torch.testing.assert_close(traj.x_t[k + 1].double(), expected, rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(result.images.double(), expected.clamp(-1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_at_eta_1_over_all_steps_is_ddpm(kind):
    # With every timestep visited abar_t / abar_{t-1} = alpha_t, so sigma^2 (eq. 16, eta = 1) reduces to
    # (1 - abar_{t-1}) / (1 - abar_t) * beta_t = beta_tilde_t, and the rest of eq. 12 to the posterior
    # mean: DDIM(eta = 1) is DDPM. Both samplers draw x_T and then one z per step but the last from
    # the seed, in the same order, so from one seed the two runs must coincide step by step.
    schedule = NoiseSchedule(kind, 1000)
    c = Consts(schedule)
    for t in range(1, 1000):
        assert ddim_sigma(c.abar[t], c.abar[t - 1], 1.0) ** 2 == pytest.approx(c.beta_tilde[t], rel=1e-9)
    model = PointOracle(schedule, wobble=0.5)
    ddpm = ddpm_sample(model, schedule, 2, seed=4, clip_x0=False, return_trajectory=True)
    ddim = ddim_sample(model, schedule, 2, steps=1000, eta=1.0, seed=4, clip_x0=False, return_trajectory=True)
    assert ddim.trajectory.timesteps == ddpm.trajectory.timesteps
    torch.testing.assert_close(ddim.trajectory.x_t, ddpm.trajectory.x_t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ddim.images, ddpm.images, rtol=1e-4, atol=1e-4)


def test_ddpm_and_ddim_eta1_steps_have_the_same_empirical_distribution():
    # Run both samplers over all T steps on 32 images (25,088 pixels, independent
    # given x_t since the model acts pixel-wise). The residual of each step,
    # x_{t-1} - AlgorithmMean(x_t), must be N(0, beta_tilde_t) for both; this
    # needs no knowledge of how the samplers draw their noise.
    schedule = NoiseSchedule("linear", T)
    c = Consts(schedule)
    n = 32
    size = n * 28 * 28
    variances = {}
    for name, run in {
        "ddpm": lambda m: ddpm_sample(m, schedule, n, seed=11, clip_x0=False),
        "ddim": lambda m: ddim_sample(m, schedule, n, steps=T, eta=1.0, seed=12, clip_x0=False),
    }.items():
        model = PointOracle(schedule, wobble=0.5)
        run(model)
        assert [t for t, _ in model.inputs] == list(range(T - 1, -1, -1))
        variances[name] = []
        for (t, x_t), (_, x_prev) in zip(model.inputs, model.inputs[1:]):
            eps = model(x_t, torch.full((n,), t))
            residual = x_prev.double() - algorithm2_mean(c, x_t, t, eps)
            var_ref = c.beta_tilde[t]
            assert abs(residual.mean().item()) < 5 * math.sqrt(var_ref / size), (name, t)
            var = residual.pow(2).mean().item()  # known mean 0: n degrees of freedom
            assert abs(var - var_ref) < 5 * var_ref * math.sqrt(2 / size), (name, t, var, var_ref)
            variances[name].append(var)
    # And the two samplers agree with each other, step by step (two independent estimates).
    for t, (a, b) in zip(range(T - 1, 0, -1), zip(variances["ddpm"], variances["ddim"])):
        assert abs(a - b) < 5 * c.beta_tilde[t] * math.sqrt(4 / size), t


# ---------------------------------------------------------------- predict


def test_predict_clips_x0_and_keeps_eps_consistent_with_eq_4():
    schedule = NoiseSchedule("linear", T)
    c = Consts(schedule)
    model = PointOracle(schedule, wobble=0.5)
    x_t = 3 * torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    t = 40
    _, raw_x0 = predict(model, schedule, x_t, t, clip_x0=False)
    assert raw_x0.abs().max() > 1  # the wobble pushes the guess out of range: clipping matters
    eps, x0 = predict(model, schedule, x_t, t, clip_x0=True)
    torch.testing.assert_close(x0, raw_x0.clamp(-1, 1))
    # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps must still hold with the clipped pair.
    rebuilt = math.sqrt(c.abar[t]) * x0.double() + math.sqrt(1 - c.abar[t]) * eps.double()
    torch.testing.assert_close(rebuilt, x_t.double(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ bookkeeping


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_images_different_seed_different_images(sampler):
    schedule = NoiseSchedule("linear", T)
    model = PointOracle(schedule, wobble=0.5)
    kwargs = {"eta": 1.0} if sampler == "ddim" else {}
    a = sample(model, schedule, 2, sampler, steps=10, seed=0, **kwargs).images
    b = sample(model, schedule, 2, sampler, steps=10, seed=0, **kwargs).images
    other = sample(model, schedule, 2, sampler, steps=10, seed=1, **kwargs).images
    assert torch.equal(a, b)
    assert (a - other).abs().max() > 1e-3
    assert a.shape == (2, 1, 28, 28) and a.abs().max() <= 1


def test_ddim_eta0_is_deterministic_given_x_T():
    # No noise after x_T: the seed must not matter once x_T is fixed.
    schedule = NoiseSchedule("linear", T)
    model = PointOracle(schedule, wobble=0.5)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    a = ddim_sample(model, schedule, 2, steps=10, eta=0.0, seed=0, x_T=x_T).images
    b = ddim_sample(model, schedule, 2, steps=10, eta=0.0, seed=1, x_T=x_T).images
    assert torch.equal(a, b)


def test_ddpm_trajectory_visits_all_T_steps_down_to_zero():
    schedule = NoiseSchedule("linear", T)
    traj = ddpm_sample(PointOracle(schedule), schedule, 3, return_trajectory=True).trajectory
    assert traj.timesteps == list(range(T - 1, -1, -1))
    for tensor in (traj.x_t, traj.x0_pred, traj.noise_pred):
        assert tensor.shape == (T, 3, 1, 28, 28)


def test_ddim_trajectory_visits_the_requested_steps():
    schedule = NoiseSchedule("linear", T)
    traj = ddim_sample(PointOracle(schedule), schedule, 3, steps=10, return_trajectory=True).trajectory
    assert traj.timesteps == ddim_timesteps(T, 10)
    assert len(traj.timesteps) == 10 and traj.timesteps[0] == T - 1 and traj.timesteps[-1] == 0
    assert all(a > b for a, b in zip(traj.timesteps, traj.timesteps[1:]))
    for tensor in (traj.x_t, traj.x0_pred, traj.noise_pred):
        assert tensor.shape == (10, 3, 1, 28, 28)


@pytest.mark.parametrize("sampler", list(SAMPLER_REGISTRY))
def test_a_trajectory_is_the_steps_the_generator_yields(sampler):
    schedule = NoiseSchedule("linear", T)
    model = PointOracle(schedule, wobble=0.5)
    steps = list(sample_steps(model, schedule, 2, sampler, SamplerSettings(steps=7, eta=1.0), seed=5))
    # One chain: each step starts where the one before it led, and the last one leads to clean data.
    assert [step.t_prev for step in steps] == [step.t for step in steps[1:]] + [None]
    assert all(torch.equal(before.x_prev, after.x_t) for before, after in itertools.pairwise(steps))
    result = sample(model, schedule, 2, sampler, 7, seed=5, eta=1.0, return_trajectory=True)
    assert torch.equal(result.images, steps[-1].x_prev.clamp(-1, 1))
    made = Trajectory.from_steps(steps)
    assert made.timesteps == result.trajectory.timesteps == [step.t for step in steps]
    for name in ("x_t", "x0_pred", "noise_pred"):
        assert torch.equal(getattr(made, name), getattr(result.trajectory, name))


def test_no_trajectory_unless_asked():
    schedule = NoiseSchedule("linear", T)
    assert ddim_sample(PointOracle(schedule), schedule, 1, steps=5).trajectory is None


def test_ddim_timesteps_1000_50():
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and len(set(ts)) == 50
    assert ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize("total", [50, 1000])
def test_ddim_timesteps_for_every_step_count(total):
    for steps in range(2, total + 1):
        ts = ddim_timesteps(total, steps)
        assert len(ts) == steps, steps
        assert ts[0] == total - 1 and ts[-1] == 0, steps
        assert all(a > b for a, b in itertools.pairwise(ts)), steps
        # Evenly spaced: every gap within one of (total - 1) / (steps - 1).
        gap = (total - 1) / (steps - 1)
        assert all(abs((a - b) - gap) <= 1 for a, b in itertools.pairwise(ts)), steps


@pytest.mark.parametrize("total", [50, 1000])
def test_the_solver_timesteps_stop_one_spacing_short_of_zero(total):
    schedule = NoiseSchedule("linear", total)
    for steps in range(1, total + 1):
        ts = solver_timesteps(schedule, SamplerSettings(steps=steps))
        assert len(ts) == steps and ts[0] == total - 1, steps
        assert all(a > b for a, b in itertools.pairwise(ts)), steps
        if steps < total:  # DDIM's steps + 1 timesteps, all but t = 0
            assert ts == ddim_timesteps(total, steps + 1)[:-1], steps
    assert solver_timesteps(schedule, SamplerSettings(steps=total)) == list(range(total - 1, -1, -1))


def test_single_step_ddim_starts_from_the_noisiest_timestep():
    # x_T ~ N(0, I) is the marginal at t = T only; a one-step DDIM must ask the model
    # about t = T (code index total - 1), not about t = 1, which treats noise as a clean image.
    assert ddim_timesteps(1000, 1) == [999]


@pytest.mark.parametrize("steps", [0, -1, T + 1])
def test_invalid_step_counts_raise(steps):
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(T, steps)
    schedule = NoiseSchedule("linear", T)
    with pytest.raises(ValueError, match="steps"):
        ddim_sample(PointOracle(schedule), schedule, 1, steps=steps)
    with pytest.raises(ValueError, match="steps"):
        sample(PointOracle(schedule), schedule, 1, "dpm_solver", steps)


def test_negative_eta_raises():
    schedule = NoiseSchedule("linear", T)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(PointOracle(schedule), schedule, 1, steps=5, eta=-0.1)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        SamplerSettings(eta=float("nan"))


def test_unknown_sampler_is_refused_in_one_line_naming_the_known_ones():
    schedule = NoiseSchedule("linear", T)
    with pytest.raises(ValueError, match="sampler must be one of") as refusal:
        sample(PointOracle(schedule), schedule, 1, "euler")
    message = str(refusal.value)
    assert "\n" not in message and "'euler'" in message
    assert all(f"'{name}'" in message for name in SAMPLER_REGISTRY)
