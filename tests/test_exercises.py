"""The exercise checker: right answers pass, typical wrong ones are named, stubs and crashes stay friendly.

The solutions and the mistakes below are written the way a student would write them, from the
equations, independently of the mistake versions inside ddpm_lib.exercises.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL
from torch import nn

from ddpm_lib import exercises
from ddpm_lib.exercises import check
from ddpm_lib.objective import diffusion_loss
from ddpm_lib.schedule import NoiseSchedule
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


def test_training_loss_cases_replay_the_library_draws():
    # The checker hands the student the t and noise it believes diffusion_loss drew; recompute
    # the loss from them directly, so that a change in diffusion_loss's draws cannot go unnoticed.
    model = exercises._untrained_network()
    for case in exercises._training_loss_cases(NoiseSchedule(), None):
        _, x0, t, noise, schedule = case.args
        direct = ((model(schedule.q_sample(x0, t, noise), t) - noise) ** 2).mean()
        torch.testing.assert_close(direct, case.expected)


def test_the_sampler_cases_include_the_first_and_last_steps():
    T = 1000
    ddpm = [case.args[1] for case in exercises._ddpm_cases(NoiseSchedule(), None)]
    ddim = [(case.args[1], case.args[2]) for case in exercises._ddim_cases(NoiseSchedule(), None)]
    assert T - 1 in ddpm and 0 in ddpm
    assert ddim[0][0] == T - 1 and ddim[-1][1] == 0 and all(t_prev < t - 1 for t, t_prev in ddim)


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


def loss_model_sees_x0(model, x0, t, noise, schedule):
    return torch.nn.functional.mse_loss(model(x0, t), noise)


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


def posterior_swapped(x0, x_t, t, schedule):
    return posterior_mean(x_t, x0, t, schedule)


def posterior_alpha_bar_t(x0, x_t, t, schedule):
    alpha, beta, alpha_bar = per_image(schedule.alphas, t), per_image(schedule.betas, t), per_image(schedule.alpha_bars, t)
    return alpha_bar.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar) / (1 - alpha_bar) * x_t


def posterior_wraps(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars, t - 1)
    return alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0 + alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def posterior_no_sqrt(x0, x_t, t, schedule):
    alpha, beta = per_image(schedule.alphas, t), per_image(schedule.betas, t)
    alpha_bar, alpha_bar_prev = per_image(schedule.alpha_bars, t), per_image(schedule.alpha_bars_prev, t)
    return alpha_bar_prev * beta / (1 - alpha_bar) * x0 + alpha * (1 - alpha_bar_prev) / (1 - alpha_bar) * x_t


def ddpm_always_noise_beta(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    return (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt() + beta.sqrt() * z


def ddpm_beta_variance(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + beta.sqrt() * z


def ddpm_plus(x_t, t, noise_pred, z, schedule):
    return ddpm_step(x_t, t, -noise_pred, z, schedule)


def ddpm_alpha_t(x_t, t, noise_pred, z, schedule):
    alpha, beta = schedule.alphas[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t].sqrt() * z


def ddpm_variance_as_std(x_t, t, noise_pred, z, schedule):
    alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * noise_pred) / alpha.sqrt()
    return mean if t == 0 else mean + schedule.posterior_variance[t] * z


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


MISTAKES = [
    ("alpha_bars", lambda betas: 1 - betas, "alphas_not_multiplied"),
    ("alpha_bars", lambda betas: 1 - betas.cumsum(0), "summed_not_multiplied"),
    ("alpha_bars", lambda betas: betas.cumprod(0), "product_of_betas"),
    ("alpha_bars", alpha_bars_loop_one_step_short, "shifted_by_one"),
    ("q_sample", q_sample_alpha_t, "alpha_t_for_alpha_bar"),
    ("q_sample", q_sample_no_sqrt_on_noise, "sqrt_forgotten"),
    ("q_sample", q_sample_t_minus_1, "t_off_by_one"),
    ("q_sample", q_sample_first_t_only, "one_t_for_the_batch"),
    ("training_loss", loss_sum, "summed_not_averaged"),
    ("training_loss", loss_norm_per_image, "norm_per_image"),
    ("training_loss", loss_target_x0, "target_is_x0"),
    ("training_loss", loss_model_sees_x0, "network_sees_x0"),
    ("v_target", v_flipped, "signs_flipped"),
    ("v_target", v_weights_swapped, "weights_swapped"),
    ("v_target", v_no_sqrt, "sqrt_forgotten"),
    ("v_target", v_alpha_t, "alpha_t_for_alpha_bar"),
    ("posterior_mean", posterior_swapped, "coefficients_swapped"),
    ("posterior_mean", posterior_alpha_bar_t, "alpha_bar_t_for_alpha_bar_prev"),
    ("posterior_mean", posterior_wraps, "wraps_around_at_t_0"),
    ("posterior_mean", posterior_no_sqrt, "sqrt_forgotten"),
    ("ddpm_step", ddpm_always_noise_beta, "noise_at_the_last_step"),
    ("ddpm_step", ddpm_beta_variance, "variance_beta_t"),
    ("ddpm_step", ddpm_plus, "sign_flipped"),
    ("ddpm_step", ddpm_alpha_t, "alpha_t_for_alpha_bar"),
    ("ddpm_step", ddpm_variance_as_std, "sqrt_forgotten"),
    ("ddim_step", ddim_neighbour, "neighbour_for_t_prev"),
    ("ddim_step", ddim_alphas, "alpha_t_for_alpha_bar"),
    ("ddim_step", ddim_no_sqrt_in_x0_hat, "sqrt_forgotten"),
    ("ddim_step", ddim_minus_direction, "sign_flipped"),
    ("guided_noise", lambda label, nothing, w: label + w * (label - nothing), "paper_convention"),
    ("guided_noise", lambda label, nothing, w: label + w * (nothing - label), "roles_swapped"),
    ("guided_noise", lambda label, nothing, w: nothing + w * (nothing - label), "direction_reversed"),
    ("guided_noise", lambda label, nothing, w: nothing + w * label - nothing, "parentheses_forgotten"),
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
    assert all(2 <= len(ex.mistakes) <= 5 for ex in exercises.EXERCISES.values())


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
    assert result.message.startswith("✗ q_sample differs from ddpm_lib at t = 999, mixed t (largest difference 0.5, at t = 999). Hint: ")


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


def test_inputs_changed_in_place_do_not_spoil_the_check():
    def in_place(eps_label, eps_nothing, w):
        eps_label -= eps_nothing
        return eps_nothing.add_(w * eps_label)

    assert check("guided_noise", in_place).passed


def test_a_loss_given_as_a_float_is_accepted(tiny_model):
    assert run_check("training_loss", lambda *args: training_loss(*args).item(), tiny_model).passed


def test_messages_are_one_deterministic_line(tiny_model):
    for name, function, _ in MISTAKES[::3]:
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
