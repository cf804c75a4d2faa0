"""A 2-D toy whose scores are known exactly: why classifier-free guidance works, in numbers.

Data: K classes in the plane, class k a round Gaussian N(mu_k, s^2 I), chosen with
probability pi_k. Everything guidance needs then has a closed form:

    log p(x | y=k)  = log N(x; mu_k, s^2 I)
    log p(x)        = log sum_k pi_k N(x; mu_k, s^2 I)
    p(y=k | x)      = pi_k N(x; mu_k, s^2 I) / p(x)                      (Bayes' rule)

    grad log p(x | y=k) = -(x - mu_k) / s^2
    grad log p(x)       = sum_j p(y=j | x) * (-(x - mu_j) / s^2)
    grad log p(y=k | x) = grad log p(x | y=k) - grad log p(x)

The last line is Bayes' rule with the log taken and then the gradient (p(y) does
not depend on x, so it drops out). Guidance with weight w follows

    grad log p(x) + w grad log p(y | x) = grad log [p(x) p(y | x)^w],

w = 1 being the conditional score itself. Noising such data, x_t = sqrt(alpha_bar) x_0 +
sqrt(1 - alpha_bar) eps, gives again a mixture of round Gaussians (``noised``), so the
same formulas hold at every t; the best possible noise prediction there is
E[eps | x_t] = -sqrt(1 - alpha_bar) grad log p_t(x_t) (``best_noise_prediction``).

Float64 numpy throughout: the test compares these gradients with finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianMixture2D:
    """K round Gaussians in the plane: ``means`` (K, 2), a shared standard deviation ``std``, class ``weights`` (K,)."""

    means: np.ndarray
    std: float
    weights: np.ndarray | None = None

    def __post_init__(self):
        means = np.asarray(self.means, dtype=np.float64)
        if means.ndim != 2 or means.shape[1] != 2:
            raise ValueError(f"means must have shape (K, 2), got {means.shape}")
        weights = np.full(len(means), 1 / len(means)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if weights.shape != (len(means),) or np.any(weights <= 0) or not np.isclose(weights.sum(), 1):
            raise ValueError("weights must be K positive numbers that sum to 1")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "weights", weights)

    # ----- densities -------------------------------------------------------------------------------

    def log_prob_given(self, x: np.ndarray) -> np.ndarray:
        """log p(x | y=k) for every class: (N, 2) -> (N, K)."""
        x = np.asarray(x, dtype=np.float64)
        squared = ((x[:, None, :] - self.means[None, :, :]) ** 2).sum(-1)
        return -squared / (2 * self.std**2) - np.log(2 * np.pi * self.std**2)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log p(x) = log sum_k pi_k p(x | y=k): (N, 2) -> (N,)."""
        return _logsumexp(self.log_prob_given(x) + np.log(self.weights))

    def class_posterior(self, x: np.ndarray) -> np.ndarray:
        """p(y=k | x) for every class, by Bayes' rule: (N, 2) -> (N, K), rows summing to 1."""
        joint = self.log_prob_given(x) + np.log(self.weights)
        return np.exp(joint - _logsumexp(joint)[:, None])

    # ----- scores (gradients with respect to x) -------------------------------------------------------

    def conditional_score(self, x: np.ndarray, label: int) -> np.ndarray:
        """grad log p(x | y=label) = -(x - mu_label) / s^2: (N, 2) -> (N, 2)."""
        return -(np.asarray(x, dtype=np.float64) - self.means[label]) / self.std**2

    def score(self, x: np.ndarray) -> np.ndarray:
        """grad log p(x): each class's score weighted by how likely that class is at x."""
        x = np.asarray(x, dtype=np.float64)
        per_class = -(x[:, None, :] - self.means[None, :, :]) / self.std**2  # (N, K, 2)
        return (self.class_posterior(x)[:, :, None] * per_class).sum(1)

    def classifier_score(self, x: np.ndarray, label: int) -> np.ndarray:
        """grad log p(y=label | x) = grad log p(x | y) - grad log p(x): the direction a classifier would push x."""
        return self.conditional_score(x, label) - self.score(x)

    def guided_score(self, x: np.ndarray, label: int, w: float) -> np.ndarray:
        """grad log p(x) + w grad log p(y | x) = grad log [p(x) p(y | x)^w]; w = 1 is ``conditional_score``."""
        return self.score(x) + w * self.classifier_score(x, label)

    def guided_log_density(self, x: np.ndarray, label: int, w: float) -> np.ndarray:
        """log p(x) + w log p(y | x), up to a constant: the density that guided sampling aims at."""
        return self.log_prob(x) + w * np.log(self.class_posterior(x)[:, label])

    # ----- the same data, noised ------------------------------------------------------------------------

    def noised(self, alpha_bar: float) -> GaussianMixture2D:
        """The law of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps: means shrink, every class widens."""
        if not 0 < alpha_bar <= 1:
            raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
        std = float(np.sqrt(alpha_bar * self.std**2 + (1 - alpha_bar)))
        return GaussianMixture2D(np.sqrt(alpha_bar) * self.means, std, self.weights)

    def best_noise_prediction(self, x_t: np.ndarray, alpha_bar: float, label: int | None = None) -> np.ndarray:
        """E[eps | x_t] (or E[eps | x_t, y=label]) for x_t drawn from ``noised(alpha_bar)`` of this mixture.

        This is what a perfectly trained eps_theta would output. It equals
        -sqrt(1 - alpha_bar) times the score of the noised mixture (unconditional or given the label).
        """
        noisy = self.noised(alpha_bar)
        score = noisy.score(x_t) if label is None else noisy.conditional_score(x_t, label)
        return -np.sqrt(1 - alpha_bar) * score


# Notebook 4's toy (and its exercise's): three round classes A, B, C, apart enough to tell, close enough to overlap.
THREE_CLASSES = GaussianMixture2D(means=[[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]], std=1.1)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=-1)
    return top + np.log(np.exp(a - top[..., None]).sum(-1))
