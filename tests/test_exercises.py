"""The exercise checker: right answers pass, typical wrong ones are named, stubs and crashes stay friendly, and an
accepted answer does the library's work.

The solutions and the mistakes below are written the way a student would write them, from the
equations, independently of the mistake versions inside ddpm_lib.exercises.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL
from torch import nn

from ddpm_lib import exercises
from ddpm_lib.exercises import check, yours_or_ddpm_lib
from ddpm_lib.objective import diffusion_loss
from ddpm_lib.sampling import ddim_sample, ddpm_sample, get_sampler, sample
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.trainer import Trainer
from ddpm_lib.unet import SimpleUNet


def per_image(values, t):
    return values[t].view(-1, 1, 1, 1)


# ----------------------------------------------------------------- right answers


def alpha_bars(betas):
    return torch.cumprod(1 - betas, dim=0)


def q_sample(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def training_loss(model, x0, t, noise, schedule):
    return ((noise - model(q_sample(x0, t, noise, schedule), t)) ** 2).mean()


def v_target(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def posterior_mean(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars_prev, t)
    return alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def ddpm_step(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddim_step(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    x0_hat = (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar_prev).sqrt() * noise_pred


def guided_noise(eps_label, eps_nothing, w):
    return eps_nothing + w * (eps_label - eps_nothing)


def noise_from_score(score, alpha_bar):
    return -((1 - alpha_bar) ** 0.5) * score


SOLUTIONS = {
    f.__name__: f
    for f in (alpha_bars, q_sample, training_loss, v_target, posterior_mean, ddpm_step, ddim_step, guided_noise, noise_from_score)
}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = SimpleUNet(TINY_MODEL)
    nn.init.normal_(model.conv_out.weight, std=0.1)  # its zero-initialised output would hide x_t from the loss
    return model


def run_check(name, function, tiny_model, **kwargs):
    if name == "training_loss":
        kwargs.setdefault("model", tiny_model)
    return check(name, function, **kwargs)


@pytest.mark.parametrize("name", SOLUTIONS)
def test_the_solution_is_accepted(name, tiny_model):
    result = run_check(name, SOLUTIONS[name], tiny_model)
    assert result.status == "right", result.message
    assert result.passed and result.mistake is None
    assert repr(result).startswith(f"✓ {name} matches ddpm_lib on ")


@pytest.mark.parametrize("name", [n for n in SOLUTIONS if n != "training_loss"])
def test_the_solution_is_accepted_with_another_schedule(name):
    assert check(name, SOLUTIONS[name], schedule=NoiseSchedule("cosine", 100)).passed


def test_the_default_model_of_training_loss():
    assert check("training_loss", training_loss).passed
    assert check("training_loss", lambda m, x0, t, noise, s: ((noise - m(x0, t)) ** 2).mean()).mistake == "network_sees_x0"


def test_the_accepted_line_says_each_term_was_compared_alone():
    message = check("posterior_mean", posterior_mean).message
    assert message == "✓ posterior_mean matches ddpm_lib on 15 cases: t = 0, t = 1, t = 500, t = 999, mixed t, each whole and term by term"


def test_training_loss_cases_replay_the_library_draws():
    # The checker hands the student the t and noise it believes diffusion_loss drew; recompute
    # the loss from them directly, so that a change in diffusion_loss's draws cannot go unnoticed.
    for case in exercises._training_loss_cases(NoiseSchedule(), None):
        model, x0, t, noise, schedule = case.args
        direct = ((model(schedule.q_sample(x0, t, noise), t) - noise) ** 2).mean()
        torch.testing.assert_close(direct, case.expected)


def test_training_loss_is_asked_one_digit_at_a_time_at_the_ends_of_the_schedule():
    singles = [case.args[2].tolist() for case in exercises._training_loss_cases(NoiseSchedule(), None) if len(case.args[1]) == 1]
    assert singles == [[0], [1], [500], [999]]


def test_the_sampler_cases_include_the_first_and_last_steps():
    T = 1000
    ddpm = [case.args[1] for case in exercises._ddpm_cases(NoiseSchedule(), None)]
    ddim = [(case.args[1], case.args[2]) for case in exercises._ddim_cases(NoiseSchedule(), None)]
    assert T - 1 in ddpm and 0 in ddpm
    assert ddim[0][0] == T - 1 and ddim[-1][1] == 0 and all(t_prev < t - 1 for t, t_prev in ddim)


def test_each_term_is_compared_alone_with_the_other_inputs_at_zero():
    cases = exercises._ddpm_cases(NoiseSchedule(), None)
    alone = [case for case in cases if case.alone == "z"]
    assert [case.label for case in alone[:1]] == ["t = 999 with x_t = 0, noise_pred = 0"]
    for case in alone:
        x_t, t, noise_pred, z, schedule = case.args
        assert not x_t.any() and not noise_pred.any() and z.any()
        # With x_t and the noise guess at zero, all that is left of a step is its fresh noise, sigma_t z (none at t = 0).
        sigma = schedule.posterior_variance[t].sqrt() if t > 0 else 0.0
        torch.testing.assert_close(case.expected, sigma * z)


# ----------------------------------------------------------------- typical mistakes, as a student writes them


def alpha_bars_loop_one_step_short(betas):
    # A running product written as a loop that records the value before multiplying.
    product, out = 1.0, []
    for beta in betas:
        out.append(product)
        product = product * (1 - beta)
    return torch.tensor(out, dtype=betas.dtype)


def q_sample_alpha_t(x0, t, noise, schedule):
    alpha = per_image(schedule.alphas, t)
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


def q_sample_no_sqrt_on_noise(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar) * noise


def q_sample_weights_swapped(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return (1 - alpha_bar).sqrt() * x0 + alpha_bar.sqrt() * noise


def q_sample_t_minus_1(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t - 1)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def q_sample_first_t_only(x0, t, noise, schedule):
    alpha_bar = schedule.alpha_bars[t[0]]
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def loss_sum(model, x0, t, noise, schedule):
    return ((noise - model(q_sample(x0, t, noise, schedule), t)) ** 2).sum()


def loss_norm_per_image(model, x0, t, noise, schedule):
    return ((noise - model(q_sample(x0, t, noise, schedule), t)) ** 2).sum(dim=(1, 2, 3)).mean()


def loss_target_x0(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(model(q_sample(x0, t, noise, schedule), t), x0)


def loss_target_v(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(model(q_sample(x0, t, noise, schedule), t), v_target(x0, t, noise, schedule))


def loss_min_snr(model, x0, t, noise, schedule):
    snr = per_image(schedule.snr, t)
    return (snr.clamp(max=5) / snr * (model(q_sample(x0, t, noise, schedule), t) - noise) ** 2).mean()


def loss_model_sees_x0(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(model(x0, t), noise)


def loss_network_told_zero(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(model(q_sample(x0, t, noise, schedule), torch.zeros_like(t)), noise)


def loss_schedule_at_t_minus_1(model, x0, t, noise, schedule):
    a, b = per_image(schedule.sqrt_alpha_bars, t - 1), per_image(schedule.sqrt_one_minus_alpha_bars, t - 1)
    return torch.nn.functional.mse_loss(model(a * x0 + b * noise, t), noise)


def loss_without_roots(model, x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return torch.nn.functional.mse_loss(model(alpha_bar * x0 + (1 - alpha_bar) * noise, t), noise)


def loss_first_t_only(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(
        model(schedule.sqrt_alpha_bars[t[0]] * x0 + schedule.sqrt_one_minus_alpha_bars[t[0]] * noise, t), noise
    )


def v_flipped(x0, t, noise, schedule):
    return -v_target(x0, t, noise, schedule)


def v_weights_swapped(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * x0 - (1 - alpha_bar).sqrt() * noise


def v_no_sqrt(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return alpha_bar * noise - (1 - alpha_bar) * x0


def v_alpha_t(x0, t, noise, schedule):
    alpha = per_image(schedule.alphas, t)
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * x0


def v_t_minus_1(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t - 1)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def v_first_t_only(x0, t, noise, schedule):
    a, b = schedule.sqrt_alpha_bars[t[0]], schedule.sqrt_one_minus_alpha_bars[t[0]]
    return a * noise - b * x0


def posterior_swapped(x0, x_t, t, schedule):
    return posterior_mean(x_t, x0, t, schedule)


def posterior_alpha_bar_t(x0, x_t, t, schedule):
    alpha, beta, alpha_bar = per_image(schedule.alphas, t), per_image(schedule.betas, t), per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar) / (1 - alpha_bar) * x_t


def posterior_alpha_bar_t_in_x0_coefficient(x0, x_t, t, schedule):
    # The issue's example: only x_0's coefficient reads alpha_bar_t, and the x_t term, much the larger, hides it.
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars_prev, t)
    return alpha_bar.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def posterior_alpha_bar_t_in_xt_coefficient(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars_prev, t)
    return alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar) / (1 - alpha_bar) * x_t


def posterior_alpha_bar_for_alpha(x0, x_t, t, schedule):
    beta, alpha_bar, alpha_bar_prev = (
        per_image(schedule.betas, t),
        per_image(schedule.alpha_bars, t),
        per_image(schedule.alpha_bars_prev, t),
    )
    return alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0 + alpha_bar.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def posterior_wraps(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars, t - 1)
    return alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def posterior_no_sqrt(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars_prev, t)
    return alpha_bar_prev * beta / (1 - alpha_bar) * x0 + alpha * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def posterior_first_t_only(x0, x_t, t, schedule):
    return posterior_mean(x0, x_t, torch.full_like(t, int(t[0])), schedule)


def ddpm_always_noise_beta(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    return (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt() + beta.sqrt() * z


def ddpm_beta_variance(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + beta.sqrt() * z


def ddpm_last_step_at_1(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 1 else mean + schedule.posterior_variance[t].sqrt() * z


def ddpm_no_noise(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    return (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()


def ddpm_plus(x_t, t, noise_pred, z, schedule):
    return ddpm_step(x_t, t, -noise_pred, z, schedule)


def ddpm_x_t_alone_divided(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = x_t / alpha.sqrt() - beta / (1 - alpha_bar).sqrt() * noise_pred
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddpm_alpha_t(x_t, t, noise_pred, z, schedule):
    alpha, beta = schedule.alphas[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddpm_alpha_bar_for_alpha(x_t, t, noise_pred, z, schedule):
    alpha_bar, beta = schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddpm_variance_as_std(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t] * z


def ddpm_paper_index(x_t, t, noise_pred, z, schedule):
    i = t - 1  # "the paper's t is code t - 1"
    alpha, alpha_bar, beta = schedule.alphas[i], schedule.alpha_bars[i], schedule.betas[i]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[i].sqrt() * z


def ddpm_clips_x0_hat(x_t, t, noise_pred, z, schedule):
    # Line 4 written as ddpm_lib explains it, through x0_hat and the posterior mean, with the library's clipping copied in.
    alpha_bar = schedule.alpha_bars[t]
    x0_hat = ((x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()).clamp(-1, 1)
    mean = posterior_mean(x0_hat, x_t, torch.full((len(x_t),), t), schedule)
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddim_clips_x0_hat(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    x0_hat = ((x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()).clamp(-1, 1)
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar_prev).sqrt() * noise_pred


def ddpm_sigma_at_t_minus_1(x_t, t, noise_pred, z, schedule):
    mean = ddpm_no_noise(x_t, t, noise_pred, z, schedule)
    return mean if t == 0 else mean + schedule.posterior_variance[t - 1].sqrt() * z


def ddim_neighbour(x_t, t, t_prev, noise_pred, schedule):
    return ddim_step(x_t, t, t - 1, noise_pred, schedule)


def ddim_alphas(x_t, t, t_prev, noise_pred, schedule):
    alpha, alpha_prev = schedule.alphas[t], schedule.alphas[t_prev]
    x0_hat = (x_t - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
    return alpha_prev.sqrt() * x0_hat + (1 - alpha_prev).sqrt() * noise_pred


def ddim_no_sqrt_in_x0_hat(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    x0_hat = (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar_prev).sqrt() * noise_pred


def ddim_minus_direction(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    x0_hat = (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
    return alpha_bar_prev.sqrt() * x0_hat - (1 - alpha_bar_prev).sqrt() * noise_pred


def ddim_without_direction(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    return alpha_bar_prev.sqrt() * (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()


def ddim_returns_x0_hat(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar = schedule.alpha_bars[t]
    return (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()


def ddim_direction_at_t(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    x0_hat = (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar).sqrt() * noise_pred


def ddim_t_prev_minus_1(x_t, t, t_prev, noise_pred, schedule):
    return ddim_step(x_t, t, t_prev - 1, noise_pred, schedule)


def ddim_swapped(x_t, t, t_prev, noise_pred, schedule):
    return ddim_step(x_t, t_prev, t, noise_pred, schedule)


MISTAKES = [
    ("alpha_bars", lambda betas: 1 - betas, "alphas_not_multiplied"),
    ("alpha_bars", lambda betas: 1 - betas.cumsum(0), "summed_not_multiplied"),
    ("alpha_bars", lambda betas: betas.cumprod(0), "product_of_betas"),
    ("alpha_bars", alpha_bars_loop_one_step_short, "shifted_by_one"),
    ("alpha_bars", lambda betas: 1 - (1 - betas).cumprod(0), "noise_share_returned"),
    ("alpha_bars", lambda betas: (1 - betas).cumprod(0) ** 0.5, "square_root_taken"),
    ("alpha_bars", lambda betas: (1 - betas).prod(), "total_not_running"),
    ("q_sample", q_sample_alpha_t, "alpha_t_for_alpha_bar"),
    ("q_sample", q_sample_no_sqrt_on_noise, "sqrt_forgotten"),
    ("q_sample", q_sample_weights_swapped, "weights_swapped"),
    ("q_sample", q_sample_t_minus_1, "t_off_by_one"),
    ("q_sample", q_sample_first_t_only, "one_t_for_the_batch"),
    ("training_loss", loss_sum, "summed_not_averaged"),
    ("training_loss", loss_norm_per_image, "norm_per_image"),
    ("training_loss", loss_target_x0, "target_is_x0"),
    ("training_loss", loss_target_v, "target_is_v"),
    ("training_loss", loss_min_snr, "weighted_by_snr"),
    ("training_loss", loss_model_sees_x0, "network_sees_x0"),
    ("training_loss", loss_network_told_zero, "network_told_another_t"),
    ("training_loss", loss_schedule_at_t_minus_1, "t_off_by_one"),
    ("training_loss", loss_without_roots, "sqrt_forgotten"),
    ("training_loss", loss_first_t_only, "one_t_for_the_batch"),
    ("v_target", v_flipped, "signs_flipped"),
    ("v_target", v_weights_swapped, "weights_swapped"),
    ("v_target", v_no_sqrt, "sqrt_forgotten"),
    ("v_target", v_alpha_t, "alpha_t_for_alpha_bar"),
    ("v_target", v_t_minus_1, "t_off_by_one"),
    ("v_target", v_first_t_only, "one_t_for_the_batch"),
    ("posterior_mean", posterior_swapped, "coefficients_swapped"),
    ("posterior_mean", posterior_alpha_bar_t_in_x0_coefficient, "alpha_bar_t_in_x0_coefficient"),
    ("posterior_mean", posterior_alpha_bar_t_in_xt_coefficient, "alpha_bar_t_in_xt_coefficient"),
    ("posterior_mean", posterior_alpha_bar_t, "alpha_bar_t_for_alpha_bar_prev"),
    ("posterior_mean", posterior_wraps, "wraps_around_at_t_0"),
    ("posterior_mean", posterior_alpha_bar_for_alpha, "alpha_bar_for_alpha_in_xt"),
    ("posterior_mean", posterior_no_sqrt, "sqrt_forgotten"),
    ("posterior_mean", posterior_first_t_only, "one_t_for_the_batch"),
    ("ddpm_step", ddpm_beta_variance, "variance_beta_t"),
    ("ddpm_step", ddpm_always_noise_beta, "noise_at_the_last_step"),
    ("ddpm_step", ddpm_last_step_at_1, "last_step_at_paper_t_1"),
    ("ddpm_step", ddpm_no_noise, "noise_never_added"),
    ("ddpm_step", ddpm_sigma_at_t_minus_1, "variance_at_t_minus_1"),
    ("ddpm_step", ddpm_plus, "sign_flipped"),
    ("ddpm_step", ddpm_x_t_alone_divided, "parentheses_forgotten"),
    ("ddpm_step", ddpm_alpha_t, "alpha_t_for_alpha_bar"),
    ("ddpm_step", ddpm_alpha_bar_for_alpha, "alpha_bar_for_alpha"),
    ("ddpm_step", ddpm_variance_as_std, "sqrt_forgotten"),
    ("ddpm_step", ddpm_paper_index, "t_off_by_one"),
    ("ddpm_step", ddpm_clips_x0_hat, "x0_hat_clipped"),
    ("ddim_step", ddim_without_direction, "direction_left_out"),
    ("ddim_step", ddim_returns_x0_hat, "x0_hat_returned"),
    ("ddim_step", ddim_direction_at_t, "direction_at_t_level"),
    ("ddim_step", ddim_neighbour, "neighbour_for_t_prev"),
    ("ddim_step", ddim_t_prev_minus_1, "t_prev_off_by_one"),
    ("ddim_step", ddim_swapped, "t_and_t_prev_swapped"),
    ("ddim_step", ddim_alphas, "alpha_t_for_alpha_bar"),
    ("ddim_step", ddim_no_sqrt_in_x0_hat, "sqrt_forgotten"),
    ("ddim_step", ddim_minus_direction, "sign_flipped"),
    ("ddim_step", ddim_clips_x0_hat, "x0_hat_clipped"),
    ("guided_noise", lambda label, nothing, w: label + w * (label - nothing), "paper_convention"),
    ("guided_noise", lambda label, nothing, w: label + w * (nothing - label), "roles_swapped"),
    ("guided_noise", lambda label, nothing, w: nothing + w * (nothing - label), "direction_reversed"),
    ("guided_noise", lambda label, nothing, w: nothing + w * label - nothing, "parentheses_forgotten"),
    ("guided_noise", lambda label, nothing, w: w * (label - nothing), "starting_point_left_out"),
    ("noise_from_score", lambda score, alpha_bar: (1 - alpha_bar) ** 0.5 * score, "sign_forgotten"),
    ("noise_from_score", lambda score, alpha_bar: (alpha_bar - 1) * score, "sqrt_forgotten"),
    ("noise_from_score", lambda score, alpha_bar: -(alpha_bar**0.5) * score, "alpha_bar_for_one_minus"),
    ("noise_from_score", lambda score, alpha_bar: -score / (1 - alpha_bar) ** 0.5, "divided_not_multiplied"),
]


@pytest.mark.parametrize("name, function, key", MISTAKES, ids=[f"{name}-{key}" for name, _, key in MISTAKES])
def test_a_typical_mistake_is_named_with_its_hint(name, function, key, tiny_model):
    result = run_check(name, function, tiny_model)
    mistake = next(m for m in exercises.EXERCISES[name].mistakes if m.key == key)
    assert (result.status, result.mistake) == ("wrong", key), result.message
    assert result.message == f"✗ {name}: looks like {mistake.what}. Hint: {mistake.hint}."


def test_every_listed_mistake_is_tested():
    tested = {(name, key) for name, _, key in MISTAKES}
    assert tested == {(name, m.key) for name, ex in exercises.EXERCISES.items() for m in ex.mistakes}


# ----------------------------------------------------------------- mistakes the checker names without a table


def q_sample_draws_noise(x0, t, noise, schedule):
    return q_sample(x0, t, torch.randn_like(x0), schedule)


def loss_draws_t_and_noise(model, x0, t, noise, schedule):
    t = torch.randint(0, schedule.timesteps, t.shape)
    noise = torch.randn_like(x0)
    return training_loss(model, x0, t, noise, schedule)


def v_draws_noise(x0, t, noise, schedule):
    return v_target(x0, t, torch.randn_like(x0), schedule)


def ddpm_draws_z(x_t, t, noise_pred, z, schedule):
    return ddpm_step(x_t, t, noise_pred, torch.randn_like(x_t), schedule)


def ddim_adds_noise(x_t, t, t_prev, noise_pred, schedule):
    alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    sigma = ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()  # eta = 1
    return ddim_step(x_t, t, t_prev, noise_pred, schedule) + sigma * torch.randn_like(x_t)


DRAWS = [
    ("q_sample", q_sample_draws_noise, "t = 0", "use the noise it is handed"),
    ("training_loss", loss_draws_t_and_noise, "batch 1", "use the t and the noise it is handed"),
    ("v_target", v_draws_noise, "t = 0", "use the noise it is handed"),
    ("ddpm_step", ddpm_draws_z, "t = 999", "use the z it is handed (line 3)"),
    ("ddim_step", ddim_adds_noise, "t = 999 -> 749", "with eta = 0 a DDIM step adds no fresh noise"),
]


@pytest.mark.parametrize("name, function, where, hint", DRAWS, ids=[name for name, *_ in DRAWS])
def test_a_function_that_draws_its_own_noise_is_caught(name, function, where, hint, tiny_model):
    result = run_check(name, function, tiny_model)
    assert (result.status, result.mistake) == ("wrong", "draws_its_own_noise"), result.message
    assert result.message.startswith(
        f"✗ {name} gave two different answers to the same inputs at {where}: it draws random numbers of its own."
    )
    assert f"Hint: {hint}" in result.message


def test_the_check_leaves_the_global_random_state_alone_even_when_the_student_draws():
    state = torch.get_rng_state()
    check("ddpm_step", ddpm_draws_z)
    assert torch.equal(state, torch.get_rng_state())


def ddpm_in_place(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    x_t -= beta / (1 - alpha_bar).sqrt() * noise_pred
    x_t /= alpha.sqrt()
    return x_t if t == 0 else x_t + schedule.posterior_variance[t].sqrt() * z


def q_sample_in_place(x0, t, noise, schedule):
    alpha_bar = per_image(schedule.alpha_bars, t)
    return x0.mul_(alpha_bar.sqrt()).add_((1 - alpha_bar).sqrt() * noise)


def guided_noise_in_place(eps_label, eps_nothing, w):
    eps_label -= eps_nothing
    return eps_nothing + w * eps_label


@pytest.mark.parametrize(
    "name, function, changed, where",
    [
        ("ddpm_step", ddpm_in_place, "x_t", "t = 999"),
        ("q_sample", q_sample_in_place, "x0", "t = 0"),
        ("guided_noise", guided_noise_in_place, "eps_label", "w = 0"),
    ],
)
def test_an_input_changed_in_place_is_named(name, function, changed, where):
    # Right numbers, but in a sampler's loop x_t is still needed after the step (the trajectory keeps it).
    result = check(name, function)
    assert (result.status, result.mistake) == ("wrong", "changed_in_place")
    assert result.message.startswith(f"✗ {name} changed its input {changed} in place at {where}. Hint: the caller still needs {changed}")


@pytest.mark.parametrize(
    "loss",
    [
        lambda *args: training_loss(*args).item(),
        lambda *args: training_loss(*args).detach(),
        lambda *args: torch.no_grad()(training_loss)(*args),
    ],
    ids=["item", "detach", "no_grad"],
)
def test_a_loss_without_its_gradient_is_refused(loss, tiny_model):
    result = run_check("training_loss", loss, tiny_model)
    assert (result.status, result.mistake) == ("wrong", "no_gradient")
    assert result.message.startswith("✗ training_loss gives the right number, but no gradient to train with. Hint: ")


def test_a_loss_of_shape_one_is_still_one_number(tiny_model):
    assert run_check("training_loss", lambda *args: training_loss(*args).reshape(1), tiny_model).passed


def test_a_loss_per_digit_is_told_to_average_over_the_batch(tiny_model):
    def per_digit(model, x0, t, noise, schedule):
        return ((noise - model(q_sample(x0, t, noise, schedule), t)) ** 2).mean(dim=(1, 2, 3))

    result = run_check("training_loss", per_digit, tiny_model)
    assert (
        result.message
        == "✗ training_loss returned shape (4,) at batch 1, expected (). Hint: the loss is one number: average over the batch as well (.mean())."
    )


def test_a_network_told_t_plus_1_runs_past_the_end(tiny_model):
    result = run_check("training_loss", lambda m, x0, t, noise, s: training_loss(lambda x, u: m(x, u + 1), x0, t, noise, s), tiny_model)
    assert result.status == "error" and "IndexError at one digit at t = 999" in result.message
    assert "t + 1 runs past the end" in result.message


def test_a_wrong_coefficient_of_the_small_term_is_found_term_by_term():
    # x_0's coefficient 1% too large: in the whole answers the x_t term hides it, but alone it shows.
    def x0_coefficient_one_percent_off(x0, x_t, t, schedule):
        return posterior_mean(1.01 * x0, x_t, t, schedule)

    result = check("posterior_mean", x0_coefficient_one_percent_off)
    assert result.status == "wrong" and result.mistake is None
    assert result.message.startswith(
        "✗ posterior_mean differs from ddpm_lib at t = 0, t = 1, t = 500, t = 999, mixed t (largest difference "
    )
    assert result.message.endswith(
        "Hint: each term alone (the other inputs set to 0), the term in x0 came out wrong and the term in x_t right: "
        "x0's coefficient is sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)."
    )


def test_a_wrong_direction_coefficient_in_ddim_is_found_term_by_term():
    def direction_five_percent_off(x_t, t, t_prev, noise_pred, schedule):
        alpha_bar, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
        x0_hat = (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
        return alpha_bar_prev.sqrt() * x0_hat + 1.05 * (1 - alpha_bar_prev).sqrt() * noise_pred

    result = check("ddim_step", direction_five_percent_off)
    assert "the term in noise_pred came out wrong and the term in x_t right: noise_pred's coefficient is " in result.message


def test_a_wrong_noise_level_in_ddpm_is_found_term_by_term():
    def sigma_ten_percent_off(x_t, t, noise_pred, z, schedule):
        return ddpm_step(x_t, t, noise_pred, 1.1 * z, schedule)

    result = check("ddpm_step", sigma_ten_percent_off)
    assert (
        "the term in z came out wrong and the terms in x_t and noise_pred right: z's coefficient is sigma_t = sqrt(beta_tilde_t)"
        in result.message
    )


def test_one_image_repeated_over_the_batch_is_named():
    result = check("q_sample", lambda x0, t, noise, s: q_sample(x0, t, noise, s)[:1].expand(len(x0), -1, -1, -1))
    assert result.message.startswith("✗ q_sample returned one image repeated for the whole batch at t = 0. Hint: ")


def test_one_image_for_a_batch_gets_a_hint():
    result = check("ddpm_step", lambda x_t, t, eps, z, s: ddpm_step(x_t, t, eps, z, s)[:1])
    assert result.message == (
        "✗ ddpm_step returned shape (1, 1, 28, 28) at t = 999, expected (4, 1, 28, 28). "
        "Hint: one image came back where the batch has 4: keep the batch dimension (no [0], no .mean(0))."
    )


def test_a_broadcast_that_grows_the_batch_gets_the_view_hint():
    def three_dims(x0, t, noise, schedule):
        alpha_bar = schedule.alpha_bars[t].view(-1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    result = check("q_sample", three_dims)
    assert result.message.startswith("✗ q_sample returned shape (4, 4, 28, 28) at t = 0, expected (4, 1, 28, 28). Hint: ")
    assert ".view(-1, 1, 1, 1)" in result.message


def test_an_answer_that_is_zero_everywhere_is_not_called_one_image_repeated():
    # Zero at t = 0 from a coefficient that vanishes there: a wrong term, not a batch mix-up.
    def variance_for_beta(x0, x_t, t, schedule):
        return (
            per_image(schedule.alpha_bars_prev, t).sqrt()
            * per_image(schedule.posterior_variance, t)
            / (1 - per_image(schedule.alpha_bars, t))
            * x0
            + per_image(schedule.posterior_mean_coef_xt, t) * x_t
        )

    result = check("posterior_mean", variance_for_beta)
    assert "repeated" not in result.message and "the term in x0 came out wrong and the term in x_t right" in result.message


def test_an_image_without_its_batch_dimension_gets_a_hint():
    result = check("ddpm_step", lambda x_t, t, eps, z, s: ddpm_step(x_t, t, eps, z, s)[0])
    assert result.message.endswith("Hint: one image came back where the batch has 4: keep the batch dimension (no [0], no .mean(0)).")


def test_an_answer_that_is_no_tensor_is_named():
    result = check("ddpm_step", lambda x_t, t, eps, z, s: (ddpm_step(x_t, t, eps, z, s), t))
    assert result.message == "✗ ddpm_step returned a tuple at t = 999: return one tensor."


# ----------------------------------------------------------------- stubs, crashes, unknown mistakes


def stub_with_ellipsis(x0, t, noise, schedule):
    return ...


def stub_that_raises(x0, t, noise, schedule):
    raise NotImplementedError


def stub_with_pass(x0, t, noise, schedule):
    pass


@pytest.mark.parametrize("stub", [stub_with_ellipsis, stub_that_raises, stub_with_pass])
def test_a_stub_is_not_attempted_and_does_not_raise(stub):
    result = check("q_sample", stub)
    assert result.status == "not attempted" and not result.passed
    assert repr(result) == "… q_sample: not attempted yet — replace the ... with your code"


def test_every_exercise_accepts_a_stub(tiny_model):
    for name in exercises.EXERCISES:
        assert run_check(name, lambda *args: ..., tiny_model).status == "not attempted"


def test_an_exception_is_reported_in_one_line():
    def crashes(x0, t, noise, schedule):
        return x0 / 0 + {}["alpha_bar"]

    result = check("q_sample", crashes)
    assert result.status == "error"
    assert repr(result) == "✗ q_sample raised KeyError at t = 0: 'alpha_bar'."


def test_a_missing_reshape_gets_a_broadcasting_hint():
    def no_reshape(x0, t, noise, schedule):
        return schedule.alpha_bars[t].sqrt() * x0 + (1 - schedule.alpha_bars[t]).sqrt() * noise

    result = check("q_sample", no_reshape)
    assert result.status == "error" and "\n" not in result.message
    assert result.message.startswith("✗ q_sample raised RuntimeError at t = 0: ")
    assert ".view(-1, 1, 1, 1)" in result.message


def test_an_index_past_the_end_gets_an_index_hint():
    result = check("ddpm_step", lambda x_t, t, eps, z, s: x_t * s.alphas[t + 1])
    assert result.status == "error" and "IndexError at t = 999" in result.message
    assert "t + 1 runs past the end" in result.message


def test_an_unknown_mistake_gets_a_generic_hint_naming_the_failing_t():
    def wrong_at_the_end(x0, t, noise, schedule):
        return q_sample(x0, t, noise, schedule) + (t == 999).view(-1, 1, 1, 1) * 0.5

    result = check("q_sample", wrong_at_the_end)
    assert (result.status, result.mistake) == ("wrong", None)
    assert result.message.startswith(
        "✗ q_sample differs from ddpm_lib at t = 999, mixed t (largest difference 0.5, at t = 999). Hint: print the factors"
    )


def test_a_near_tie_names_the_first_case_whatever_the_rounding():
    # The mixed batch misses by a hair more than t = 999 (as rounding did on one CPU and not another): both
    # show as 0.5, so the first case shown, t = 999, is named on every machine.
    def wrong_at_the_end(x0, t, noise, schedule):
        extra = 0.5 + (1e-6 if len(set(t.tolist())) > 1 else 0.0)
        return q_sample(x0, t, noise, schedule) + (t == 999).view(-1, 1, 1, 1) * extra

    assert "(largest difference 0.5, at t = 999)" in check("q_sample", wrong_at_the_end).message


def test_a_wrong_shape_is_reported():
    result = check("q_sample", lambda x0, t, noise, s: q_sample(x0, t, noise, s)[:, 0])
    assert result.message == "✗ q_sample returned shape (4, 28, 28) at t = 0, expected (4, 1, 28, 28)."


def test_nan_is_reported():
    result = check("guided_noise", lambda label, nothing, w: label * float("nan"))
    assert result.message.startswith("✗ guided_noise gives inf or NaN (failing at w = 0, w = 1, w = 2, w = 4.5).")


def test_messages_are_one_deterministic_line(tiny_model):
    for name, function, _ in MISTAKES[::5]:
        first, second = run_check(name, function, tiny_model), run_check(name, function, tiny_model)
        assert repr(first) == repr(second) and "\n" not in repr(first)


def test_the_check_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    check("training_loss", training_loss)
    check("ddpm_step", ddpm_step)
    assert torch.equal(state, torch.get_rng_state())


def test_an_unknown_exercise_is_refused():
    with pytest.raises(KeyError, match="q_sample"):
        check("q_smaple", q_sample)


def test_diffusion_loss_is_what_the_checker_compares_with(tiny_model):
    # The same claim from the other side: the library's loss on the case's inputs is the case's answer.
    case = exercises._training_loss_cases(NoiseSchedule(), tiny_model)[0]
    model, x0, t, noise, schedule = case.args
    torch.testing.assert_close(diffusion_loss(model, schedule, x0, t, noise), case.expected)


def test_v_target_is_what_the_trainer_regresses_onto():
    # Independently of Objective.target: x_t and v determine eps again, eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v.
    for case in exercises._v_target_cases(NoiseSchedule(), None):
        x0, t, noise, schedule = case.args
        alpha_bar = per_image(schedule.alpha_bars, t)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        torch.testing.assert_close((1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * case.expected, noise, atol=1e-5, rtol=1e-5)


def test_alpha_bars_is_checked_where_it_is_tiny():
    # The last quarter of the linear schedule has alpha_bar below 0.004: an error there must still count.
    def wrong_at_the_end(betas):
        out = torch.cumprod(1 - betas, dim=0)
        out[-len(out) // 4 :] *= 1.5
        return out

    result = check("alpha_bars", wrong_at_the_end)
    assert result.status == "wrong" and "linear (T = 1000)" in result.message


def test_alpha_bars_in_float32_is_still_right():
    assert check("alpha_bars", lambda betas: torch.cumprod(1 - betas.float(), dim=0)).passed


# ----------------------------------------------------------------- the student's code, running


def counting(function):
    """``function``, counting its calls in ``.calls``."""

    def counted(*args):
        counted.calls += 1
        return function(*args)

    counted.calls = 0
    return counted


@pytest.mark.parametrize(
    "name, library",
    [("ddpm_step", "ddpm_step"), ("ddim_step", "ddim_step"), ("training_loss", "diffusion_loss")],
)
def test_a_stub_leaves_the_work_to_the_library_and_says_so(name, library):
    choice = yours_or_ddpm_lib(name, lambda *args: ...)
    done = "trained" if name == "training_loss" else "drawn"
    assert (choice.yours, repr(choice)) == (False, f"{done} with ddpm_lib's {library}: your {name} is not attempted yet")
    assert choice.use is (diffusion_loss if name == "training_loss" else get_sampler(name.removesuffix("_step")))


def test_a_wrong_answer_leaves_the_work_to_the_library():
    choice = yours_or_ddpm_lib("ddpm_step", ddpm_plus)
    assert (choice.yours, repr(choice)) == (False, "drawn with ddpm_lib's ddpm_step: your ddpm_step does not pass check yet")


def test_your_ddpm_step_draws_the_digits_ddpm_lib_draws(model, schedule):
    # The untrained network's x0_hat leaves [-1, 1], so the library clips it: the student's line 4 must
    # be handed the noise guess that agrees with the clipped x0_hat for the runs to agree.
    yours = counting(ddpm_step)
    choice = yours_or_ddpm_lib("ddpm_step", yours)
    yours.calls = 0  # the check's own calls
    assert (choice.yours, repr(choice)) == (True, "drawn with your ddpm_step")
    drawn = sample(model, schedule, 4, choice.use, seed=3)
    assert yours.calls == schedule.timesteps
    torch.testing.assert_close(drawn.images, ddpm_sample(model, schedule, 4, seed=3).images, atol=1e-4, rtol=0)


def test_your_ddim_step_draws_the_digits_ddpm_lib_draws(model, schedule):
    yours = counting(ddim_step)
    choice = yours_or_ddpm_lib("ddim_step", yours)
    yours.calls = 0
    drawn = sample(model, schedule, 4, choice.use, steps=10, seed=3)
    assert yours.calls == 9  # every jump between visited timesteps; the tenth step, onto alpha_bar = 1, is x0_hat
    torch.testing.assert_close(drawn.images, ddim_sample(model, schedule, 4, steps=10, seed=3).images, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"eq\. 12 with eta = 0; run it with eta = 0, not 1"):
        sample(model, schedule, 4, choice.use, steps=10, eta=1.0)


def test_your_training_loss_trains_as_ddpm_lib_does(tiny_config):
    config = tiny_config(prediction="eps", loss_weighting="uniform", out_dir=None, batch_size=32)
    yours = counting(training_loss)
    choice = yours_or_ddpm_lib("training_loss", yours)
    yours.calls = 0
    assert (choice.yours, repr(choice)) == (True, "trained with your training_loss")
    digits = torch.rand((64, 1, 28, 28), generator=torch.Generator().manual_seed(0)) * 2 - 1  # stand-ins: no MNIST to load
    runs = [Trainer(config, progress=False, images=digits), Trainer(config, progress=False, images=digits, loss_function=choice.use)]
    for trainer in runs:
        trainer.train_steps(6)
    assert yours.calls == 6
    torch.testing.assert_close(runs[1].losses, runs[0].losses, rtol=1e-4, atol=0)
    assert runs[1].losses[-1] < runs[1].losses[0]


def test_your_training_loss_is_refused_for_another_objective(tiny_config):
    choice = yours_or_ddpm_lib("training_loss", training_loss)
    config = tiny_config(prediction="v", out_dir=None, batch_size=32)
    trainer = Trainer(config, progress=False, images=torch.zeros((32, 1, 28, 28)), loss_function=choice.use)
    with pytest.raises(ValueError, match="your training_loss is L_simple, for a network without labels: train it with prediction='eps'"):
        trainer.train_steps(1)
