"""NoiseSchedule checked against references written independently in this file.

- betas: the linear end points of Ho et al. (2020) and the cosine alpha_bar of
  Nichol & Dhariwal (2021, eq. 17), evaluated with Python floats and ``math``;
- alpha_bar: a running product over betas in a plain Python loop;
- q(x_t | x_0): the closed form against t Monte-Carlo steps of the one-step
  forward process, with tolerances of a few standard errors;
- q(x_{t-1} | x_t, x_0): Bayes' rule for two scalar Gaussians, by completing the
  square and, as a check on that algebra, on a fine numerical grid;
- predict_x0 / predict_noise: round trips through q_sample; SNR against its definition;
- bad arguments: ValueError naming the parameter.

Code indexing: row i of every schedule tensor is the paper's t = i + 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_lib.schedule import SCHEDULE_REGISTRY, NoiseSchedule

T = 1000


# ---------------------------------------------------------------- references


def reference_linear_betas(timesteps: int) -> list[float]:
    """Ho et al.: 1e-4 .. 0.02 over 1000 steps; the library rescales by 1000 / T for other T."""
    scale = 1000 / timesteps
    lo, hi = scale * 1e-4, scale * 0.02
    return [lo + (hi - lo) * i / (timesteps - 1) for i in range(timesteps)]


def cosine_f(t: float, timesteps: int, s: float = 0.008) -> float:
    return math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2


def reference_cosine_alpha_bar(t: int, timesteps: int) -> float:
    """Nichol & Dhariwal eq. 17 for paper t (1-based), before any clipping of beta."""
    return cosine_f(t, timesteps) / cosine_f(0, timesteps)


def running_product(betas: list[float]) -> list[float]:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), one float multiplication at a time."""
    out, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        out.append(acc)
    return out


def floats(tensor: torch.Tensor) -> list[float]:
    return tensor.double().tolist()


def assert_close_list(actual: list[float], expected: list[float], rel: float, abs_: float = 0.0):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a == pytest.approx(e, rel=rel, abs=abs_), f"row {i}: {a} != {e}"


# ------------------------------------------------------------ betas, alpha_bar


def test_linear_betas_have_the_papers_end_points_at_T_1000():
    betas = NoiseSchedule("linear", T).betas
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    # float32 storage: agree with the float64 reference to float32 precision.
    assert_close_list(floats(betas), reference_linear_betas(T), rel=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_is_the_running_product_of_one_minus_beta(kind):
    schedule = NoiseSchedule(kind, T)
    betas = floats(schedule.betas)
    expected = running_product(betas)
    # Relative error of a float32 value stored from float64: ~6e-8; betas were
    # themselves rounded to float32, which moves the product by at most ~T * 6e-8 relative.
    assert_close_list(floats(schedule.alpha_bars), expected, rel=1e-4)
    # 1 - beta from a float32 beta is exact only to ~6e-8 absolute (cancellation near beta = 0.999).
    assert_close_list(floats(schedule.alphas), [1 - b for b in betas], rel=1e-6, abs_=1e-7)
    assert_close_list(floats(schedule.alpha_bars_prev), [1.0] + expected[:-1], rel=1e-4)
    assert_close_list(floats(schedule.sqrt_alpha_bars), [math.sqrt(a) for a in expected], rel=1e-4)
    assert_close_list(floats(schedule.sqrt_one_minus_alpha_bars), [math.sqrt(1 - a) for a in expected], rel=1e-4)


def test_alpha_bar_from_independent_linear_betas():
    # Not even the betas come from the library here.
    expected = running_product(reference_linear_betas(T))
    assert_close_list(floats(NoiseSchedule("linear", T).alpha_bars), expected, rel=1e-4)


@pytest.mark.parametrize(
    "timesteps",
    [2, 10, 20, 21, 50, 100],
)
def test_linear_schedule_is_a_valid_diffusion_for_every_accepted_T(timesteps):
    # Any T the constructor accepts must give 0 < beta < 1, so that 0 < alpha_bar < 1
    # and sqrt(alpha_bar) can be divided by in predict_x0.
    schedule = NoiseSchedule("linear", timesteps)
    assert (schedule.betas > 0).all() and (schedule.betas < 1).all(), schedule.betas[-3:]
    assert (schedule.alpha_bars > 0).all()


def test_buffers_are_float32_and_follow_to_device():
    schedule = NoiseSchedule("cosine", 100)
    buffers = dict(schedule.named_buffers())
    assert {"betas", "alphas", "alpha_bars", "posterior_variance", "snr"} <= buffers.keys()
    for name, value in buffers.items():
        assert value.dtype == torch.float32, name
        assert value.shape == (100,), name
    # The meta device needs no accelerator and still shows whether every buffer moved.
    moved = schedule.to("meta")
    for name, value in moved.named_buffers():
        assert value.device.type == "meta", name
        assert value.dtype == torch.float32, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffers_follow_to_cuda():
    schedule = NoiseSchedule("linear", 100).to("cuda")
    for name, value in schedule.named_buffers():
        assert value.device.type == "cuda", name


def test_cosine_schedule_end_points_and_clipping():
    schedule = NoiseSchedule("cosine", T)
    alpha_bars = floats(schedule.alpha_bars)
    assert alpha_bars[0] > 0.9999  # almost no noise at the first step
    assert alpha_bars[-1] < 1e-6  # almost pure noise at the last
    assert schedule.betas.max().item() <= 0.999 + 1e-7
    assert (schedule.betas > 0).all()


def test_cosine_alpha_bar_matches_the_cos_squared_formula_where_beta_is_unclipped():
    schedule = NoiseSchedule("cosine", T)
    reference = [reference_cosine_alpha_bar(t, T) for t in range(1, T + 1)]
    # beta_t = 1 - abar_t / abar_{t-1}; from the first row where that exceeds 0.999
    # the library clips and alpha_bar leaves the formula, by design.
    unclipped_betas = [1 - a / b for a, b in zip(reference, [1.0] + reference[:-1])]
    first_clipped = next((i for i, b in enumerate(unclipped_betas) if b > 0.999), T)
    assert first_clipped > 0.99 * T  # clipping only touches the very end
    assert_close_list(floats(schedule.alpha_bars)[:first_clipped], reference[:first_clipped], rel=1e-4)


# ------------------------------------------------------------- forward process


def test_closed_form_q_xt_given_x0_matches_repeated_one_step_process():
    # x_t after t applications of q_step must have the moments of eq. 4:
    # mean sqrt(abar_t) x0, variance 1 - abar_t (per pixel, pixels independent).
    # T = 100 keeps the loop short; eq. 4 holds for any T.
    timesteps = 100
    schedule = NoiseSchedule("linear", timesteps)
    abar = running_product(reference_linear_betas(timesteps))
    n = 20_000
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=torch.float64)
    x = x0.expand(n, 4).clone()
    generator = torch.Generator().manual_seed(0)
    checkpoints = {1, 3, 25, timesteps}  # number of forward steps taken
    checked = 0
    for step in range(1, timesteps + 1):
        t = torch.full((n,), step - 1, dtype=torch.long)  # code index of paper t = step
        x = schedule.q_step(x, t, torch.randn(x.shape, generator=generator, dtype=torch.float64))
        if step not in checkpoints:
            continue
        mean_ref = math.sqrt(abar[step - 1]) * x0
        var_ref = 1 - abar[step - 1]
        # Standard errors of the sample mean and sample variance of n Gaussian draws.
        se_mean = math.sqrt(var_ref / n)
        se_var = var_ref * math.sqrt(2 / (n - 1))
        mean, var = x.mean(0), x.var(0)
        assert torch.all((mean - mean_ref).abs() < 5 * se_mean), (step, mean, mean_ref)
        assert torch.all((var - var_ref).abs() < 5 * se_var), (step, var, var_ref)
        checked += 1
    assert checked == len(checkpoints)


def test_q_sample_is_eq4_with_given_noise():
    schedule = NoiseSchedule("linear", T)
    abar = running_product(reference_linear_betas(T))
    t = torch.tensor([0, 7, 500, 999])
    x0 = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    out = schedule.q_sample(x0, t, noise)
    for row, ti in enumerate(t.tolist()):
        expected = math.sqrt(abar[ti]) * x0[row] + math.sqrt(1 - abar[ti]) * noise[row]
        torch.testing.assert_close(out[row], expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ posterior


def reference_posterior(x0: float, xt: float, abar_prev: float, beta: float) -> tuple[float, float]:
    """Bayes for scalars, by completing the square:
    p(x_{t-1}) ∝ N(x_t; sqrt(alpha) x_{t-1}, beta) · N(x_{t-1}; sqrt(abar_prev) x0, 1 - abar_prev).
    As a function of x_{t-1} the first factor is a Gaussian with precision alpha / beta
    and mean x_t / sqrt(alpha); precisions add and means combine precision-weighted.
    """
    alpha = 1 - beta
    prior_precision = 1 / (1 - abar_prev)
    likelihood_precision = alpha / beta
    precision = prior_precision + likelihood_precision
    mean = (prior_precision * math.sqrt(abar_prev) * x0 + likelihood_precision * xt / math.sqrt(alpha)) / precision
    return mean, 1 / precision


def grid_posterior(x0: float, xt: float, abar_prev: float, beta: float) -> tuple[float, float]:
    """The same product of densities, normalised numerically on a fine grid (no algebra)."""
    alpha = 1 - beta
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    log_p = -((xt - math.sqrt(alpha) * grid) ** 2) / (2 * beta) - (grid - math.sqrt(abar_prev) * x0) ** 2 / (2 * (1 - abar_prev))
    w = torch.softmax(log_p, 0)
    mean = (w * grid).sum().item()
    return mean, (w * (grid - mean) ** 2).sum().item()


POSTERIOR_CASES = [(x0, xt) for x0 in (-1.0, 0.3, 1.0) for xt in (-2.0, 0.5, 1.5)]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 5, 50, 500, 998])
def test_posterior_matches_bayes_rule_for_gaussians(kind, t):
    schedule = NoiseSchedule(kind, T)
    betas = floats(schedule.betas)
    abar = running_product(betas)
    x0 = torch.tensor([c[0] for c in POSTERIOR_CASES], dtype=torch.float64)
    xt = torch.tensor([c[1] for c in POSTERIOR_CASES], dtype=torch.float64)
    mean, var = schedule.posterior(x0, xt, torch.full((len(x0),), t))
    for i, (a, b) in enumerate(POSTERIOR_CASES):
        ref_mean, ref_var = reference_posterior(a, b, abar[t - 1], betas[t])
        assert mean[i].item() == pytest.approx(ref_mean, rel=1e-4, abs=1e-6), (a, b)
        assert var[i].item() == pytest.approx(ref_var, rel=1e-4), (a, b)


def test_completing_the_square_agrees_with_a_numerical_grid():
    # Guards the reference above against an algebra slip of its own.
    betas = reference_linear_betas(T)
    abar = running_product(betas)
    for t in (5, 300, 900):
        for x0, xt in [(-1.0, 1.5), (0.7, -0.2)]:
            ref = reference_posterior(x0, xt, abar[t - 1], betas[t])
            grid = grid_posterior(x0, xt, abar[t - 1], betas[t])
            assert grid[0] == pytest.approx(ref[0], rel=1e-6, abs=1e-8)
            assert grid[1] == pytest.approx(ref[1], rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_variance_is_beta_tilde_for_every_t(kind):
    # beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t, Ho et al. eq. 7, in Python floats.
    schedule = NoiseSchedule(kind, T)
    betas = floats(schedule.betas)
    abar = running_product(betas)
    abar_prev = [1.0] + abar[:-1]
    expected = [(1 - p) / (1 - a) * b for p, a, b in zip(abar_prev, abar, betas)]
    assert_close_list(floats(schedule.posterior_variance), expected, rel=1e-4, abs_=1e-12)


def test_posterior_at_the_first_step_is_x0_with_no_variance():
    # t = 1 in the paper: x_0 is the target itself, so q(x_0 | x_1, x_0) is a point mass.
    schedule = NoiseSchedule("linear", T)
    x0, xt = torch.tensor([0.25, -0.8]), torch.tensor([1.3, 0.1])
    mean, var = schedule.posterior(x0, xt, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(mean, x0, rtol=1e-5, atol=1e-6)
    assert torch.all(var == 0)


# ------------------------------------------------------ inversions and SNR


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_predict_x0_and_predict_noise_invert_q_sample(kind):
    schedule = NoiseSchedule(kind, T)
    generator = torch.Generator().manual_seed(3)
    t = torch.tensor([0, 1, 100, 500, 900, 990])
    x0 = torch.rand(len(t), 1, 28, 28, generator=generator) * 2 - 1
    noise = torch.randn(len(t), 1, 28, 28, generator=generator)
    x_t = schedule.q_sample(x0, t, noise)
    x0_back = schedule.predict_x0(x_t, t, noise)
    noise_back = schedule.predict_noise(x_t, t, x0)
    # float32 rounding of x_t is amplified by 1 / sqrt(abar_t) (resp. 1 / sqrt(1 - abar_t)).
    for row, ti in enumerate(t.tolist()):
        abar = schedule.alpha_bars[ti].item()
        torch.testing.assert_close(x0_back[row], x0[row], rtol=0, atol=2e-6 / math.sqrt(abar))
        torch.testing.assert_close(noise_back[row], noise[row], rtol=0, atol=2e-6 / math.sqrt(1 - abar))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_snr_is_alpha_bar_over_one_minus_alpha_bar_and_strictly_decreasing(kind):
    schedule = NoiseSchedule(kind, T)
    abar = running_product(floats(schedule.betas))
    assert_close_list(floats(schedule.snr), [a / (1 - a) for a in abar], rel=1e-4)
    snr = schedule.snr.double()
    assert torch.all(snr[1:] < snr[:-1])


# ---------------------------------------------------------------- bad input


def test_unknown_schedule_name_is_refused_in_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match="schedule must be one of") as refusal:
        NoiseSchedule("quadratic", 100)
    message = str(refusal.value)
    assert "\n" not in message and "'quadratic'" in message
    assert all(f"'{name}'" in message for name in SCHEDULE_REGISTRY)


@pytest.mark.parametrize("timesteps", [1, 0, -5])
def test_too_few_timesteps_raise_naming_the_parameter(timesteps):
    with pytest.raises(ValueError, match="timesteps"):
        NoiseSchedule("linear", timesteps)
