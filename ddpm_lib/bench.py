"""Speed on this machine, printed as a Markdown table: ``python -m ddpm_lib bench``.

Measures (never asserts) training images/second for the default model in each
memory format and precision the device supports, the time to sample 64 digits
with DDPM (1000 steps) and DDIM (50 steps), and, with ``--quality``, the
minutes of training until 90% of samples are confidently classified.
"""

from __future__ import annotations

import platform
import tempfile
import time

import torch

from .schedule import NoiseSchedule
from .trainer import EMA, Optimizer, TrainConfig, autocast, resolve_device, resolve_precision, training_step
from .unet import SimpleUNet, count_parameters


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(device, channels_last: bool, precision: str, batch_size: int = 128, seconds: float = 8.0) -> float:
    """Images per second of the trainer's own step (forward, backward, clipping, AdamW, EMA) on random inputs."""
    torch.manual_seed(0)
    config = TrainConfig(batch_size=batch_size)
    model = SimpleUNet(config.model).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    schedule = NoiseSchedule(config.schedule, config.timesteps).to(device)
    opt = Optimizer(
        torch.optim.AdamW(model.parameters(), lr=config.lr),
        torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        EMA(model, config.ema_decay),
    )
    generator = torch.Generator(device).manual_seed(0)
    x0 = torch.rand(batch_size, 1, 28, 28, device=device).mul(2).sub(1).contiguous(memory_format=memory_format)
    done = 0

    def step():
        nonlocal done
        training_step(model, schedule, opt, x0, None, config, done, generator, device, precision)
        done += 1

    for _ in range(3):  # warm-up: allocator, kernel selection
        step()
    _sync(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def sampling_seconds(device, sampler: str, steps: int, precision: str, n: int = 64) -> float:
    from .sampling import sample

    config = TrainConfig()
    model = SimpleUNet(config.model).to(device, memory_format=torch.channels_last).eval()
    schedule = NoiseSchedule(config.schedule, config.timesteps).to(device)
    with autocast(device, precision):
        sample(model, schedule, n, "ddim", 2)  # warm-up
        _sync(device)
        start = time.perf_counter()
        sample(model, schedule, n, sampler, steps)
        _sync(device)
    return time.perf_counter() - start


def minutes_to_quality(device_name: str, target: float = 0.9, max_minutes: float = 30, n_eval: int = 1000) -> tuple[float | None, list[str]]:
    """Train the default recipe epoch by epoch, checking 1,000 DDIM-50 samples after each."""
    from .evaluation import load_classifier
    from .metrics import evaluate_images, gaussian_stats
    from .sampling import sample_many
    from .trainer import train

    classifier = load_classifier()
    dummy_reference = gaussian_stats(torch.randn(64, classifier.feature_dim))  # FID is not needed here
    log, train_seconds = [], 0.0
    with tempfile.TemporaryDirectory() as out:
        epoch = 0
        while train_seconds / 60 < max_minutes:
            epoch += 1
            start = time.perf_counter()
            result = train(TrainConfig(epochs=epoch, out_dir=out, device=device_name), resume=True, progress=False)
            train_seconds += time.perf_counter() - start
            images = sample_many(result.ema_model, result.schedule, n_eval, "ddim", 50, seed=1)
            confident = evaluate_images(classifier, images, dummy_reference).confident
            log.append(f"epoch {epoch}: {train_seconds / 60:.1f} min of training, {confident:.1%} confident")
            if confident >= target:
                return train_seconds / 60, log
    return None, log


def run_bench(device_name: str = "auto", quality: bool = False, quality_minutes: float = 30) -> str:
    device = resolve_device(device_name)
    amp = resolve_precision("auto", device)
    # On CPU, "auto" means fp32; bf16 is measured too because it is the obvious thing to try.
    # On a GPU with bf16, fp16 + GradScaler is measured too: it is what a T4 runs.
    mixed = ["bf16"] if device.type == "cpu" else sorted({amp, "fp16"})
    params = count_parameters(SimpleUNet(TrainConfig().model))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    rows = [
        ("training, fp32, contiguous", f"{train_throughput(device, False, 'fp32'):.0f} img/s"),
        ("training, fp32, channels_last", f"{train_throughput(device, True, 'fp32'):.0f} img/s"),
        *[
            (f"training, {p} autocast{' + GradScaler' if p == 'fp16' else ''}, channels_last", f"{train_throughput(device, True, p):.0f} img/s")
            for p in mixed
        ],
        ("sample 64 digits, DDPM 1000 steps", f"{sampling_seconds(device, 'ddpm', 1000, amp):.1f} s"),
        ("sample 64 digits, DDIM 50 steps", f"{sampling_seconds(device, 'ddim', 50, amp):.2f} s"),
    ]
    notes = []
    if quality:
        minutes, log = minutes_to_quality(device_name, max_minutes=quality_minutes)
        rows.append(("training until 90% of samples are confident", f"{minutes:.1f} min" if minutes else f"not within {quality_minutes:g} min"))
        notes = log
    lines = [
        f"Device: {name}; torch {torch.__version__}; default SimpleUNet, {params:,} parameters, batch 128; auto precision: {amp}",
        "",
        "| measurement | result |",
        "|---|---|",
        *[f"| {what} | {value} |" for what, value in rows],
    ]
    return "\n".join(lines + ([""] + notes if notes else []))
