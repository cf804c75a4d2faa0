"""Judging a generator with the shipped digit classifier: the figures of the model card.

Kept apart from ``metrics`` (the math) because it needs MNIST, the shipped
classifier and a sampler.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass

import torch

from .checkpoint import read_weights
from .constants import SAMPLING_BATCH
from .data import load_mnist
from .device import autocast, model_device, resolve_precision
from .metrics import DigitClassifier, Evaluation, classify, evaluate_images, gaussian_stats
from .pretrained import shipped_path
from .sampling import DEFAULT_SAMPLER, SAMPLER_REGISTRY, Guidance, SamplerName, balanced_labels, get_sampler, sample_many


def load_classifier() -> DigitClassifier:
    state, _ = read_weights(shipped_path("classifier"))
    classifier = DigitClassifier()
    classifier.load_state_dict(state)
    return classifier.eval()


def test_set_stats(classifier: DigitClassifier):
    """(mu, cov) of the classifier features of the 10,000 MNIST test digits: the reference."""
    images, _ = load_mnist(train=False)
    return gaussian_stats(classify(classifier, images)[0])


def reference_and_floor(n: int):
    """The shipped classifier, the test-set reference statistics, and the real-digit floor at this n."""
    classifier = load_classifier()
    reference = test_set_stats(classifier)
    return classifier, reference, real_floor(classifier, reference, n)


def real_floor(classifier: DigitClassifier, reference, n: int, seed: int = 0) -> Evaluation:
    """The figures for n real training digits: what a perfect generator would score at this n."""
    images, _ = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return evaluate_images(classifier, images[pick], reference)


@dataclass
class ModelReport:
    sampler: SamplerName
    steps: int  # as asked for; a sampler that always takes all T steps ignores it
    timesteps: int  # T of the model's schedule
    samples: Evaluation
    floor: Evaluation
    seconds: float
    guidance: float | None = None  # conditional models: the guidance weight w

    def __str__(self) -> str:
        run = get_sampler(self.sampler).describe(self.steps, self.timesteps)
        asked = "" if self.guidance is None else f", each digit asked for equally, guidance w={self.guidance:g}"
        ratio = self.samples.fid / self.floor.fid
        return (
            f"samples ({run}{asked}, drawn in {self.seconds:.0f} s)\n{self.samples.summary()}\n"
            f"real training digits (the floor)\n{self.floor.summary()}\n"
            f"classifier-FID ratio samples / floor: {ratio:.2f}"
        )


def measure(
    model,
    schedule,
    classifier,
    reference,
    n: int,
    sampler: SamplerName,
    steps: int,
    seed: int = 0,
    eta: float = 0.0,
    batch_size: int = SAMPLING_BATCH,
    guidance: float | None = None,
) -> tuple[Evaluation, float]:
    """Draw n digits and score them; with ``guidance`` (conditional models) each digit is asked for n/10 times."""
    labels = None if guidance is None else balanced_labels(n)
    request = None if guidance is None else Guidance(labels, guidance)
    device = model_device(model)
    start = time.perf_counter()
    # The trainer's precision: fp32 on CPU, bf16 or fp16 for the network on a GPU (the sampler's arithmetic stays fp32).
    with autocast(device, resolve_precision("auto", device)):
        images = sample_many(model, schedule, n, sampler, steps, seed, eta, batch_size, guidance=request)
    seconds = time.perf_counter() - start
    return evaluate_images(classifier, images, reference, requested=labels), seconds


def evaluate_model(
    model,
    schedule,
    n: int,
    sampler: SamplerName,
    steps: int,
    seed: int = 0,
    eta: float = 0.0,
    batch_size: int = SAMPLING_BATCH,
    guidance: float | None = None,
) -> ModelReport:
    """The model card's figures for a loaded model; ``guidance`` set means a class-conditional one."""
    classifier, reference, floor = reference_and_floor(n)
    samples, seconds = measure(model, schedule, classifier, reference, n, sampler, steps, seed, eta, batch_size, guidance)
    return ModelReport(sampler, steps, schedule.timesteps, samples, floor, seconds, guidance)


CURVE_COLUMNS = (
    "curve",
    "sampler",
    "steps",
    "guidance",
    "n",
    "fid",
    "floor_fid",
    "confident",
    "worst_digit_accuracy",
    "mean_digit_accuracy",
    "seconds",
)


def read_curves(path) -> list[dict]:
    """Rows of a measured curve (a CSV written by ``python -m ddpm_lib sweep``, or one with a ``command`` column
    saying how each row was measured), with their numbers as numbers."""
    kinds = {"steps": int, "n": int, "curve": str, "sampler": str, "command": str}
    with open(path, newline="") as f:
        return [{key: kinds.get(key, float)(value) for key, value in row.items()} for row in csv.DictReader(f)]


def guidance_and_steps_curves(
    model,
    schedule,
    n: int,
    guidance_weights,
    step_counts,
    steps_for_guidance: int = 50,
    guidance_for_steps: float | None = None,
    include_ddpm: bool = True,
    seed: int = 0,
    batch_size: int = SAMPLING_BATCH,
    log=None,
    *,
    samplers=None,
    guidance_sampler: SamplerName = DEFAULT_SAMPLER,
) -> list[dict]:
    """The two measured curves of notebook 04, one row per point.

    "guidance": ``guidance_sampler`` with ``steps_for_guidance`` steps at each weight in ``guidance_weights``.
    "steps": each sampler in ``samplers`` (default: every registered one, in the registry's order) at
    ``guidance_for_steps``: one that takes a number of steps at each count in ``step_counts``, one that
    always takes all T steps (DDPM) once, unless ``include_ddpm`` is False (they are slow on a CPU).
    ``guidance_for_steps`` None takes the weight with the lowest classifier-FID on the first curve.
    A point on both curves (same sampler, steps and w) is drawn once: the same seed would draw the same digits.
    """
    # Unknown sampler names are refused here, before minutes of work.
    chosen = [get_sampler(name) for name in (SAMPLER_REGISTRY if samplers is None else samplers)]
    get_sampler(guidance_sampler)
    classifier, reference, floor = reference_and_floor(n)
    rows, drawn = [], {}

    def add(curve, sampler, steps, w):
        visited = get_sampler(sampler).steps_visited(steps, schedule.timesteps)
        if (sampler, visited, w) not in drawn:
            evaluation, seconds = measure(model, schedule, classifier, reference, n, sampler, steps, seed, 0.0, batch_size, w)
            accs = evaluation.requested_accuracy
            drawn[sampler, visited, w] = {
                "sampler": sampler, "steps": visited, "guidance": w, "n": n, "fid": evaluation.fid, "floor_fid": floor.fid,
                "confident": evaluation.confident, "worst_digit_accuracy": min(accs), "mean_digit_accuracy": sum(accs) / len(accs),
                "seconds": seconds,
            }  # fmt: skip
        rows.append({"curve": curve, **drawn[sampler, visited, w]})
        if log:
            log(rows[-1])

    for w in guidance_weights:
        add("guidance", guidance_sampler, steps_for_guidance, float(w))
    if guidance_for_steps is None:
        guidance_for_steps = min(rows, key=lambda r: r["fid"])["guidance"]
    for sampler in chosen:
        if sampler.uses_steps:
            for steps in step_counts:
                add("steps", sampler.name, int(steps), guidance_for_steps)
        elif include_ddpm:
            add("steps", sampler.name, schedule.timesteps, guidance_for_steps)
    return rows
