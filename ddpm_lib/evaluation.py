"""Judging a generator with the shipped digit classifier: the figures of the model card.

Kept apart from ``metrics`` (the math) because it needs MNIST, the shipped
classifier and a sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .metrics import DigitClassifier, Evaluation, classify, evaluate_images, gaussian_stats


def load_classifier() -> DigitClassifier:
    from .pretrained import read_weights, shipped_path

    state, _ = read_weights(shipped_path("classifier"))
    classifier = DigitClassifier()
    classifier.load_state_dict(state)
    return classifier.eval()


def test_set_stats(classifier: DigitClassifier):
    """(mu, cov) of the classifier features of the 10,000 MNIST test digits: the reference."""
    from .data import load_mnist

    images, _ = load_mnist(train=False)
    return gaussian_stats(classify(classifier, images)[0])


def real_floor(classifier: DigitClassifier, reference, n: int, seed: int = 0) -> Evaluation:
    """The figures for n real training digits: what a perfect generator would score at this n."""
    from .data import load_mnist

    images, _ = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return evaluate_images(classifier, images[pick], reference)


@dataclass
class ModelReport:
    sampler: str
    steps: int
    samples: Evaluation
    floor: Evaluation
    seconds: float

    def __str__(self) -> str:
        steps = "1000-step" if self.sampler == "ddpm" else f"{self.steps}-step"
        ratio = self.samples.fid / self.floor.fid
        return (
            f"samples ({self.sampler.upper()}, {steps}, drawn in {self.seconds:.0f} s)\n{self.samples.summary()}\n"
            f"real training digits (the floor)\n{self.floor.summary()}\n"
            f"classifier-FID ratio samples / floor: {ratio:.2f}"
        )


def evaluate_model(checkpoint, n: int, sampler: str, steps: int, seed: int = 0, eta: float = 0.0, device: str = "auto", batch_size: int = 500) -> ModelReport:
    from .pretrained import load_any
    from .sampling import sample_many

    model, schedule, _ = load_any(checkpoint, device)
    classifier = load_classifier()
    reference = test_set_stats(classifier)
    start = time.perf_counter()
    images = sample_many(model, schedule, n, sampler, steps, seed, eta, batch_size)
    seconds = time.perf_counter() - start
    return ModelReport(sampler, steps, evaluate_images(classifier, images, reference), real_floor(classifier, reference, n), seconds)
