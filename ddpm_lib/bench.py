"""Speed on this machine, printed as a Markdown table: ``python -m ddpm_lib bench``.

Measures (never asserts) the images per second of the trainer's own step for
the default model in each precision and batch size worth knowing on this
device (on a GPU, with and without the CUDA graph), the time to sample 64
digits with each registered sampler (50 steps, or all T for one that always
takes them all), and, with ``--quality``, the minutes of training until 90%
of samples are confidently classified.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from .checkpoint import build_model
from .config import TrainConfig
from .constants import TRAINING_DIGITS, Precision
from .device import autocast, resolve_device, resolve_precision
from .evaluation import load_classifier
from .metrics import DigitClassifier, Evaluation, evaluate_images, gaussian_stats
from .sampling import DEFAULT_SAMPLER, SAMPLER_REGISTRY, SamplerName, sample, sample_many
from .schedule import NoiseSchedule
from .trainer import Trainer
from .unet import SimpleUNet, count_parameters

SAMPLING_STEPS = 50  # for the samplers that take a number of steps: DDIM's usual count
GPU_BATCHES = (128, 1024, 4096)  # the default batch, and two that fill an H100 better
WARMUP_STEPS = 5  # allocator, kernel selection and (on a GPU) the graph recording stay out of the timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random digits in [-1, 1]: the step's cost does not depend on what the pixels hold."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=generator).mul(2).sub(1), torch.randint(0, 10, (n,), generator=generator)


def train_throughput(config: TrainConfig, seconds: float = 8.0) -> tuple[float, bool]:
    """Images per second of ``Trainer.train_step`` (draws, forward, backward, clipping, AdamW, EMA),
    and whether the step ran as a CUDA graph."""
    images, labels = _digits(max(4 * config.batch_size, 2048))
    trainer = Trainer(replace(config, out_dir=None, epochs=1_000), progress=False, images=images, labels=labels)
    trainer.train_steps(WARMUP_STEPS)
    _sync(trainer.device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        trainer.train_steps(10)
        steps += 10
    _sync(trainer.device)
    return steps * config.batch_size / (time.perf_counter() - start), trainer.graphed


def sampling_seconds(device, sampler: SamplerName, steps: int, precision: Precision, n: int = 64) -> float:
    config = TrainConfig()
    model = build_model(config, device).eval()
    schedule = NoiseSchedule(config.schedule, config.timesteps).to(device)
    with autocast(device, precision):
        sample(model, schedule, n, DEFAULT_SAMPLER, 2)  # warm-up
        _sync(device)
        start = time.perf_counter()
        sample(model, schedule, n, sampler, steps)
        _sync(device)
    return time.perf_counter() - start


@dataclass
class QualityMark:
    """One measurement of a run in progress: how long it has trained, and how its samples score."""

    mark: float  # as asked: minutes of optimisation, or a step count
    steps: int
    epochs: float
    train_seconds: float  # in optimisation steps only; sampling and judging the digits are not counted
    eta: float  # DDIM's noise: 0 deterministic, 1 the stochastic (DDPM-like) sampler on the same 50 steps
    scores: Evaluation
    model: torch.nn.Module  # the network that drew the digits (the EMA's); it trains on once the next mark is asked for


def quality_during_training(
    config: TrainConfig,
    marks: list[float],
    by: str,
    n: int,
    classifier: DigitClassifier,
    reference,
    seed: int = 1,
    etas: tuple[float, ...] = (0.0,),
) -> Iterator[QualityMark]:
    """Train ``config``'s recipe once and, at each mark, score n DDIM-50 samples of its EMA weights
    (one QualityMark per eta in ``etas``, all from the same starting noise).

    ``by`` is "minutes" (of optimisation on this machine) or "steps". By steps, the run is planned to
    end in the epoch of the last mark (so a cosine learning rate has decayed to about 0 there when the mark ends an
    epoch); by minutes its length is unknown in advance, and it is open-ended. It writes no files.
    """
    if by not in ("minutes", "steps"):
        raise ValueError(f"by must be 'minutes' or 'steps', got {by!r}")
    steps_per_epoch = (config.train_subset or TRAINING_DIGITS) // config.batch_size
    epochs = math.ceil(max(marks) / steps_per_epoch) if by == "steps" else 10_000
    trainer = Trainer(replace(config, out_dir=None, epochs=epochs), progress=False)
    trained = 0.0
    for mark in marks:
        if by == "steps":
            trained += trainer.train_steps(int(mark) - trainer.step)
        else:
            while trained < mark * 60:
                trained += trainer.train_steps(10)
        model = trainer.sampler_model()
        for eta in etas:
            with autocast(trainer.device, trainer.precision):
                images = sample_many(model, trainer.schedule, n, "ddim", 50, seed=seed, eta=eta)
            scores = evaluate_images(classifier, images, reference)
            yield QualityMark(mark, trainer.step, trainer.step / trainer.steps_per_epoch, trained, eta, scores, model)


def minutes_to_quality(
    config: TrainConfig, target: float = 0.9, max_minutes: float = 20, every_minutes: float = 5, n_eval: int = 1000
) -> tuple[float | None, list[str]]:
    """Minutes of training until ``target`` of n_eval samples are confidently classified (None if not within
    ``max_minutes``), checked every ``every_minutes``; and a line per check."""
    classifier = load_classifier()
    unused_reference = gaussian_stats(torch.randn(64, classifier.feature_dim))  # only the confident fraction is read
    marks = [every_minutes * k for k in range(1, math.ceil(max_minutes / every_minutes) + 1)]
    log = []
    for point in quality_during_training(config, marks, "minutes", n_eval, classifier, unused_reference):
        minutes = point.train_seconds / 60
        log.append(
            f"{minutes:.1f} min of training, {point.steps} steps ({point.epochs:.1f} epochs): {point.scores.confident:.1%} confident"
        )
        if point.scores.confident >= target:
            return minutes, log
    return None, log


def sampling_rows(device: torch.device, precision: Precision) -> list[tuple[str, str]]:
    """The time to draw 64 digits with each registered sampler, at ``SAMPLING_STEPS`` steps where it takes a number of them."""
    timesteps = TrainConfig().timesteps
    rows = []
    for sampler in SAMPLER_REGISTRY.values():
        steps = sampler.steps_visited(SAMPLING_STEPS, timesteps)
        rows.append(
            (f"sample 64 digits, {sampler.label} {steps} steps", f"{sampling_seconds(device, sampler.name, steps, precision):.2f} s")
        )
    return rows


def training_rows(device: torch.device) -> list[tuple[str, TrainConfig]]:
    """What to time: the default step; on a GPU also larger batches (which amortise kernel launches) and the
    graph on and off."""
    base = TrainConfig(device=str(device))
    if device.type == "cpu":
        rows = [(f"training, fp32, batch {b}", replace(base, batch_size=b, amp="fp32")) for b in sorted({32, 64, base.batch_size, 128})]
        return rows + [(f"training, bf16 autocast, batch {base.batch_size}", replace(base, amp="bf16"))]
    amp = resolve_precision("auto", device)
    rows = []
    for precision in ("fp32", *sorted({amp, "fp16"})):
        label = (
            f"{precision} autocast + GradScaler" if precision == "fp16" else precision if precision == "fp32" else f"{precision} autocast"
        )
        for batch in GPU_BATCHES:
            for graphs in (False, True):
                rows.append(
                    (
                        f"training, {label}, batch {batch}, {'CUDA graph' if graphs else 'plain step'}",
                        replace(base, amp=precision, batch_size=batch, cuda_graphs=graphs),
                    )
                )
    return rows


def run_bench(device_name: str = "auto", quality: bool = False, quality_minutes: float = 20, seconds: float = 8.0) -> str:
    device = resolve_device(device_name)
    amp = resolve_precision("auto", device)
    default = TrainConfig()
    params = count_parameters(SimpleUNet(default.model))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    rows = []
    for label, config in training_rows(device):
        rate, graphed = train_throughput(config, seconds)
        failed = " (capture failed: plain step)" if config.cuda_graphs and device.type == "cuda" and not graphed else ""
        rows.append((label + failed, f"{rate:.0f} img/s"))
    rows += sampling_rows(device, amp)
    notes = []
    if quality:
        minutes, notes = minutes_to_quality(replace(default, device=device_name), max_minutes=quality_minutes)
        rows.append(
            ("training until 90% of samples are confident", f"{minutes:.1f} min" if minutes else f"not within {quality_minutes:g} min")
        )
    lines = [
        f"Device: {name}; torch {torch.__version__}; default SimpleUNet, {params:,} parameters; auto precision: {amp}",
        "",
        "| measurement | result |",
        "|---|---|",
        *[f"| {what} | {value} |" for what, value in rows],
    ]
    return "\n".join(lines + ([""] + notes if notes else []))
