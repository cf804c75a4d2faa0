"""Frechet distance and Gaussian statistics checked against closed forms.

FD(N(mu1, C1), N(mu2, C2)) = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)),
the squared 2-Wasserstein distance between the two Gaussians. References:
- identical Gaussians: 0;
- diagonal (and, in their shared eigenbasis, commuting) covariances:
  ||mu1 - mu2||^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2;
- random non-commuting SPD pairs: (C1 C2)^(1/2) by the Denman-Beavers iteration,
  written here, which never symmetrises anything (the library uses eigh of
  C1^(1/2) C2 C1^(1/2) instead);
- metric properties of sqrt(FD): symmetry and the triangle inequality;
- gaussian_stats: mean and unbiased covariance summed in Python loops.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_lib.metrics import DigitClassifier, classify, evaluate_images, frechet_distance, gaussian_stats


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(d: int, seed: int) -> torch.Tensor:
    b = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    return b @ b.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def random_rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(seed), dtype=torch.float64))
    return q


def diagonal_fd(mu1, s1, mu2, s2) -> float:
    """Closed form for covariances diag(s1), diag(s2) (or any pair sharing eigenvectors)."""
    means = sum((a - b) ** 2 for a, b in zip(mu1.tolist(), mu2.tolist()))
    return means + sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(s1.tolist(), s2.tolist()))


def denman_beavers_sqrt(a: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """Principal square root of a matrix with positive eigenvalues: Y -> A^(1/2), Z -> A^(-1/2)."""
    y, z = a.clone(), torch.eye(a.shape[0], dtype=a.dtype)
    for _ in range(iterations):
        y, z = (y + torch.linalg.inv(z)) / 2, (z + torch.linalg.inv(y)) / 2
    return y


# ------------------------------------------------------------- closed forms


def test_identical_gaussians_are_at_distance_zero():
    mu, cov = torch.randn(6, generator=gen(0), dtype=torch.float64), random_spd(6, 1)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)


def test_one_dimensional_gaussians():
    # W2^2 between N(m1, a^2) and N(m2, b^2) is (m1 - m2)^2 + (a - b)^2.
    fd = frechet_distance(torch.tensor([1.0], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64),
                          torch.tensor([-0.5], dtype=torch.float64), torch.tensor([[0.25]], dtype=torch.float64))  # fmt: skip
    assert fd == pytest.approx(1.5**2 + (2 - 0.5) ** 2, rel=1e-12)


def test_diagonal_covariances():
    g = gen(2)
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(5, generator=g, dtype=torch.float64) + 0.1, torch.rand(5, generator=g, dtype=torch.float64) * 3
    fd = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert fd == pytest.approx(diagonal_fd(mu1, s1, mu2, s2), rel=1e-10)


def test_commuting_full_covariances_use_the_diagonal_formula_in_their_eigenbasis():
    g = gen(3)
    q = random_rotation(6, seed=4)
    s1, s2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.05, torch.rand(6, generator=g, dtype=torch.float64) + 0.05
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    c1, c2 = q @ torch.diag(s1) @ q.T, q @ torch.diag(s2) @ q.T
    # A rotation does not change ||mu1 - mu2||, so the means can stay as they are.
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(diagonal_fd(mu1, s1, mu2, s2), rel=1e-9)


def test_scaled_identity():
    # N(0, s^2 I_d) vs N(0, I_d): d (s - 1)^2.
    d, s = 7, 2.5
    eye = torch.eye(d, dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    assert frechet_distance(zero, s**2 * eye, zero, eye) == pytest.approx(d * (s - 1) ** 2, rel=1e-10)


def test_rank_deficient_covariances():
    # Dead ReLU units give zero-variance features; the formula still holds.
    mu = torch.zeros(3, dtype=torch.float64)
    s1 = torch.tensor([2.0, 0.0, 0.5], dtype=torch.float64)
    s2 = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    fd = frechet_distance(mu, torch.diag(s1), mu, torch.diag(s2))
    assert fd == pytest.approx(diagonal_fd(mu, s1, mu, s2), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_non_commuting_covariances_against_denman_beavers(seed):
    d = 8
    c1, c2 = random_spd(d, 10 + seed), random_spd(d, 20 + seed)
    g = gen(30 + seed)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    product = c1 @ c2
    assert not torch.allclose(product, product.T)  # they really do not commute
    root = denman_beavers_sqrt(product)
    torch.testing.assert_close(root @ root, product, rtol=1e-10, atol=1e-10)  # the iteration converged
    expected = (mu1 - mu2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * torch.trace(root)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected.item(), rel=1e-8)


def test_sqrt_fd_is_a_metric():
    # sqrt(FD) is the 2-Wasserstein distance: symmetric, and it obeys the triangle inequality.
    d = 5
    gaussians = [(torch.randn(d, generator=gen(40 + i), dtype=torch.float64), random_spd(d, 50 + i)) for i in range(4)]

    def dist(a, b):
        return math.sqrt(max(frechet_distance(*gaussians[a], *gaussians[b]), 0.0))

    for a in range(4):
        for b in range(4):
            assert dist(a, b) == pytest.approx(dist(b, a), rel=1e-8, abs=1e-8)
            for c in range(4):
                assert dist(a, c) <= dist(a, b) + dist(b, c) + 1e-9


# --------------------------------------------------------------- statistics


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    features = torch.randn(40, 3, generator=gen(5)) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0])
    rows = features.double().tolist()
    n, d = len(rows), 3
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    cov = [[sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in rows) / (n - 1) for j in range(d)] for i in range(d)]
    mu, c = gaussian_stats(features)
    assert mu.dtype == c.dtype == torch.float64
    torch.testing.assert_close(mu, torch.tensor(mean, dtype=torch.float64))
    torch.testing.assert_close(c, torch.tensor(cov, dtype=torch.float64))


def test_fd_of_samples_approaches_the_closed_form():
    # Sample statistics of N(0, I) and N(m, 4 I) in 2-D: FD -> |m|^2 + 2 (2 - 1)^2 = 1.25 + 2.
    g = gen(6)
    a = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20_000, 2, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(b)) == pytest.approx(3.25, abs=0.1)


def test_evaluate_images_against_its_own_statistics():
    # An untrained classifier is enough: FD of a set against itself is 0 and the
    # class shares are a plain count of the argmax labels.
    torch.manual_seed(0)
    classifier = DigitClassifier().eval()
    images = torch.rand(64, 1, 28, 28, generator=gen(7)) * 2 - 1
    features, probs = classify(classifier, images)
    result = evaluate_images(classifier, images, gaussian_stats(features), threshold=0.11)
    assert result.n == 64
    assert result.fid == pytest.approx(0, abs=1e-6 * max(1.0, torch.cov(features.T).trace().item()))
    labels = probs.argmax(1).tolist()
    assert result.class_fractions == pytest.approx([labels.count(k) / 64 for k in range(10)])
    assert result.confident == pytest.approx(sum(p > 0.11 for p in probs.max(1).values.tolist()) / 64)


# ------------------------------------------------------------- what evaluate_images refuses at the door


def digits(n: int = 4, size: int = 28) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=gen(0)) * 2 - 1


@pytest.mark.parametrize(
    "images, requested, message",
    [
        (digits(size=32), None, "images must be a tensor of N x 1 x 28 x 28 digits, got (4, 1, 32, 32)"),
        (digits()[:, 0], None, "images must be a tensor of N x 1 x 28 x 28 digits, got (4, 28, 28)"),
        (((digits() + 1) * 127.5).to(torch.uint8), None, "images must hold floating-point pixels in [-1, 1], got torch.uint8"),
        (digits(n=1), None, "the classifier-FID needs at least 2 digits (it fits a covariance to their features), got 1"),
        (torch.where(torch.arange(4).view(4, 1, 1, 1) == 2, float("nan"), digits()), None, "images hold NaN or infinite pixels (784 of them)"),
        (digits(), torch.tensor([0, 1, 2, 10]), "requested must hold one label from 0 to 9 per digit (4), got shape (4,)"),
        (digits(), torch.tensor([0, 1, 2]), "requested must hold one label from 0 to 9 per digit (4), got shape (3,)"),
    ],
    ids=["32x32", "no channel", "uint8", "one digit", "NaN", "label 10", "too few labels"],
)  # fmt: skip
def test_evaluate_images_refuses_what_it_cannot_score(images, requested, message):
    classifier = DigitClassifier().eval()
    reference = gaussian_stats(torch.randn(300, DigitClassifier.feature_dim, generator=gen(1), dtype=torch.float64))
    with pytest.raises(ValueError) as refused:
        evaluate_images(classifier, images, reference, requested=requested)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
