"""How good are the generated digits? A small MNIST classifier and the figures built on it.

- confident fraction: share of samples the classifier labels with probability > 0.9
  (a digit a person would read without hesitation, roughly);
- class histogram: does the model draw every digit about 10% of the time?
- classifier-FID: the Frechet distance between Gaussians fitted to the
  classifier's penultimate-layer features of generated digits and of the MNIST
  test set. Inception-FID (Heusel et al. 2017) uses the same formula on
  ImageNet features, which do not fit 28x28 digits; numbers from the two
  are not comparable. The same figure for real training digits is the floor
  a perfect generator would reach at the same N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DIGIT_SHAPE = (1, 28, 28)  # what the classifier reads: one channel of MNIST's 28 x 28 pixels
MIN_DIGITS = 2  # a covariance of the features needs at least two digits


class DigitClassifier(nn.Module):
    """Three conv blocks and a 128-wide feature layer; about 99.3% on the MNIST test set."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(128, self.feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.feature_dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(images, labels, epochs: int = 4, batch_size: int = 128, seed: int = 0, progress: bool = True) -> DigitClassifier:
    """Adam with a one-cycle learning rate and random shifts of up to 2 pixels."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=steps, disable=not progress, desc="classifier") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for i in range(0, len(images), batch_size):
                idx = order[i : i + batch_size]
                dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
                x = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))
                loss = F.cross_entropy(model(x), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lr_schedule.step()
                bar.update()
    return model.eval()


@torch.no_grad()
def classify(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate-layer features (N, 128) and class probabilities (N, 10)."""
    classifier.eval()
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = classifier.features(images[i : i + batch_size].float())
        feats.append(f.double())
        probs.append(classifier.head(f).softmax(dim=1))
    return torch.cat(feats), torch.cat(probs)


def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (classify(classifier, images)[1].argmax(1) == labels).float().mean().item()


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) between N(mu1, C1) and N(mu2, C2).

    Tr((C1 C2)^(1/2)) is computed as the sum of square roots of the eigenvalues
    of the symmetric matrix C1^(1/2) C2 C1^(1/2), which has the same spectrum
    as C1 C2 and avoids a non-symmetric matrix square root.
    """
    root1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross).item()


@dataclass
class Evaluation:
    n: int
    fid: float  # classifier-FID of the samples against the MNIST test set
    confident: float  # fraction with max class probability > 0.9
    class_fractions: list[float]  # share of samples labelled 0..9
    # Conditional sampling only: for each digit K, the share of "draw a K" samples classified as K.
    requested_accuracy: list[float] | None = None

    def summary(self) -> str:
        hist = " ".join(f"{d}:{p:.1%}" for d, p in enumerate(self.class_fractions))
        lines = [f"N={self.n}  classifier-FID={self.fid:.3f}  confident={self.confident:.1%}", f"classes  {hist}"]
        if self.requested_accuracy is not None:
            accs = " ".join(f"{d}:{a:.1%}" for d, a in enumerate(self.requested_accuracy))
            lines.append(f"asked-for digit recognised  {accs}  (worst {min(self.requested_accuracy):.1%})")
        return "\n".join(lines)


def evaluate_images(
    classifier: DigitClassifier,
    images: torch.Tensor,
    reference_stats,
    threshold: float = 0.9,
    requested: torch.Tensor | None = None,
) -> Evaluation:
    """The figures for a batch of digits in [-1, 1] against (mu, cov) of a reference set.

    ``requested``: the label each digit was asked to be (conditional sampling), for per-digit accuracy.
    Digits of another size, not floating point, with NaN or infinite pixels, or fewer than two of
    them are refused (ValueError): the figures would be silently wrong or fail deep in the linear algebra.
    """
    _check_digits(images, requested)
    features, probs = classify(classifier, images)
    confidence, predicted = probs.max(dim=1)
    fractions = torch.bincount(predicted, minlength=10).double() / len(images)
    requested_accuracy = None
    if requested is not None:
        hits = torch.bincount(requested[predicted == requested], minlength=10).double()
        asked = torch.bincount(requested, minlength=10).double()
        requested_accuracy = [h / a if a else float("nan") for h, a in zip(hits.tolist(), asked.tolist())]
    return Evaluation(
        n=len(images),
        fid=frechet_distance(*gaussian_stats(features), *reference_stats),
        confident=(confidence > threshold).double().mean().item(),
        class_fractions=fractions.tolist(),
        requested_accuracy=requested_accuracy,
    )


def _check_digits(images: torch.Tensor, requested: torch.Tensor | None) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != DIGIT_SHAPE:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of N x {' x '.join(map(str, DIGIT_SHAPE))} digits, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must hold floating-point pixels in [-1, 1], got {images.dtype} (scale uint8 pixels p to p / 127.5 - 1)")
    if len(images) < MIN_DIGITS:
        raise ValueError(
            f"the classifier-FID needs at least {MIN_DIGITS} digits (it fits a covariance to their features), got {len(images)}"
        )
    if not torch.isfinite(images).all():
        raise ValueError(
            f"images hold NaN or infinite pixels ({int((~torch.isfinite(images)).sum())} of them); the sampler that drew them diverged"
        )
    if requested is not None and (
        requested.shape != (len(images),) or requested.is_floating_point() or bool((requested < 0).any() | (requested > 9).any())
    ):
        raise ValueError(f"requested must hold one label from 0 to 9 per digit ({len(images)}), got shape {tuple(requested.shape)}")
