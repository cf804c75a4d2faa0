"""The 2-D Gaussian mixture of notebook 04: its closed-form scores against finite differences of its log densities,
Bayes' rule on the scores, and the noise prediction as a scaled score, checked against formulas written out here."""

import numpy as np
import pytest

from ddpm_lib.mixture2d import GaussianMixture2D

MIXTURE = GaussianMixture2D(means=[[-1.8, -0.6], [1.8, -0.6], [0.0, 2.0]], std=0.9, weights=[0.5, 0.3, 0.2])
POINTS = np.random.default_rng(0).uniform(-3.5, 3.5, size=(40, 2))
H = 1e-5


def finite_difference_gradient(f, x):
    """Central differences of a function (N, 2) -> (N,), one coordinate at a time."""
    grad = np.zeros_like(x)
    for d in range(2):
        step = np.zeros(2)
        step[d] = H
        grad[:, d] = (f(x + step) - f(x - step)) / (2 * H)
    return grad


def test_log_prob_is_the_mixture_density():
    x = POINTS[:5]
    by_hand = sum(
        pi * np.exp(-((x - mu) ** 2).sum(1) / (2 * MIXTURE.std**2)) / (2 * np.pi * MIXTURE.std**2)
        for pi, mu in zip(MIXTURE.weights, MIXTURE.means)
    )
    np.testing.assert_allclose(np.exp(MIXTURE.log_prob(x)), by_hand, rtol=1e-12)


def test_score_is_the_gradient_of_log_p():
    np.testing.assert_allclose(MIXTURE.score(POINTS), finite_difference_gradient(MIXTURE.log_prob, POINTS), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_conditional_score_is_the_gradient_of_log_p_given_y(label):
    expected = finite_difference_gradient(lambda x: MIXTURE.log_prob_given(x)[:, label], POINTS)
    np.testing.assert_allclose(MIXTURE.conditional_score(POINTS, label), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_classifier_score_is_the_gradient_of_log_p_y_given_x(label):
    expected = finite_difference_gradient(lambda x: np.log(MIXTURE.class_posterior(x)[:, label]), POINTS)
    np.testing.assert_allclose(MIXTURE.classifier_score(POINTS, label), expected, rtol=1e-6, atol=1e-7)


def test_class_posterior_is_bayes_rule():
    # p(y | x) = p(x | y) p(y) / p(x), each factor from its own method.
    joint = np.exp(MIXTURE.log_prob_given(POINTS)) * MIXTURE.weights
    np.testing.assert_allclose(MIXTURE.class_posterior(POINTS), joint / np.exp(MIXTURE.log_prob(POINTS))[:, None], rtol=1e-10)
    np.testing.assert_allclose(MIXTURE.class_posterior(POINTS).sum(1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_bayes_rule_on_the_scores(label):
    # grad log p(x | y) = grad log p(x) + grad log p(y | x), with the last term from finite differences, not the class.
    classifier_gradient = finite_difference_gradient(lambda x: np.log(MIXTURE.class_posterior(x)[:, label]), POINTS)
    np.testing.assert_allclose(MIXTURE.conditional_score(POINTS, label), MIXTURE.score(POINTS) + classifier_gradient, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.0, 4.5])
def test_guided_score_is_the_gradient_of_p_times_classifier_to_the_w(w):
    expected = finite_difference_gradient(lambda x: MIXTURE.guided_log_density(x, 2, w), POINTS)
    np.testing.assert_allclose(MIXTURE.guided_score(POINTS, 2, w), expected, rtol=1e-6, atol=1e-6)
    if w == 0:
        np.testing.assert_allclose(MIXTURE.guided_score(POINTS, 2, w), MIXTURE.score(POINTS))
    if w == 1:
        np.testing.assert_allclose(MIXTURE.guided_score(POINTS, 2, w), MIXTURE.conditional_score(POINTS, 2), atol=1e-12)


def test_noised_mixture_matches_samples_of_the_forward_process():
    alpha_bar = 0.3
    rng = np.random.default_rng(1)
    n = 400_000
    classes = rng.choice(3, size=n, p=MIXTURE.weights)
    x0 = MIXTURE.means[classes] + MIXTURE.std * rng.standard_normal((n, 2))
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal((n, 2))
    noisy = MIXTURE.noised(alpha_bar)
    for k in range(3):
        chosen = x_t[classes == k]
        np.testing.assert_allclose(chosen.mean(0), noisy.means[k], atol=0.01)
        np.testing.assert_allclose(chosen.std(0), noisy.std, rtol=0.01)


@pytest.mark.parametrize("alpha_bar", [0.9, 0.3, 0.02])
@pytest.mark.parametrize("label", [None, 0])
def test_the_best_noise_prediction_is_a_scaled_score(alpha_bar, label):
    # E[eps | x_t] by Gaussian conditioning within each class: Cov(eps, x_t) = sqrt(1 - a) I,
    # Var(x_t) = (a s^2 + 1 - a) I, mixed by the noised class posterior (or the given label).
    a, s = alpha_bar, MIXTURE.std
    per_class = np.stack([np.sqrt(1 - a) / (a * s**2 + 1 - a) * (POINTS - np.sqrt(a) * mu) for mu in MIXTURE.means], axis=1)
    if label is None:
        expected = (MIXTURE.noised(a).class_posterior(POINTS)[:, :, None] * per_class).sum(1)
        score = MIXTURE.noised(a).score(POINTS)
    else:
        expected = per_class[:, label]
        score = MIXTURE.noised(a).conditional_score(POINTS, label)
    np.testing.assert_allclose(MIXTURE.best_noise_prediction(POINTS, a, label), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(expected, -np.sqrt(1 - a) * score, rtol=1e-10, atol=1e-12)


def test_guidance_on_noise_predictions_is_guidance_on_scores():
    # eps_null + w (eps_y - eps_null) = -sqrt(1 - a) (grad log p(x_t) + w grad log p(y | x_t)).
    a, w = 0.4, 3.0
    eps_null = MIXTURE.best_noise_prediction(POINTS, a)
    eps_label = MIXTURE.best_noise_prediction(POINTS, a, label=1)
    np.testing.assert_allclose(
        eps_null + w * (eps_label - eps_null), -np.sqrt(1 - a) * MIXTURE.noised(a).guided_score(POINTS, 1, w), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    "bad", [dict(means=[1.0, 2.0], std=1.0), dict(means=[[0, 0]], std=0.0), dict(means=[[0, 0], [1, 1]], std=1.0, weights=[0.7, 0.7])]
)
def test_bad_mixtures_are_refused(bad):
    with pytest.raises(ValueError):
        GaussianMixture2D(**bad)


def test_the_guidance_picture_draws(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from ddpm_lib.plots import plot_guidance_field

    figure = plot_guidance_field(MIXTURE, label=2, w=3.0, points=POINTS[:6], class_names=["a", "b", "c"])
    assert len(figure.axes) == 4
    figure.savefig(tmp_path / "field.png")
