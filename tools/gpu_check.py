"""(Maintainers, on a GPU) the CUDA-graph step against the plain step: same losses, same weights.

    python tools/gpu_check.py

For each precision, two trainers from the same seed and data run 40 steps, one
replaying the recorded graph, one launching the kernels as usual. The losses
and final weights must agree to within GPU rounding (the kernels are the same,
but their order of floating-point reductions may differ between runs).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ddpm_lib.config import TrainConfig
from ddpm_lib.trainer import Trainer


def compare(precision: str, steps: int = 40, batch_size: int = 256) -> str:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4096, 1, 28, 28, generator=generator).mul(2).sub(1)
    labels = torch.randint(0, 10, (4096,), generator=generator)
    base = TrainConfig(out_dir=None, epochs=100, device="cuda", amp=precision, batch_size=batch_size)
    runs = {}
    for graphs in (False, True):
        trainer = Trainer(replace(base, cuda_graphs=graphs), progress=False, images=images, labels=labels)
        trainer.train_steps(steps)
        runs[graphs] = (trainer, torch.tensor(trainer.losses))
    (plain, plain_losses), (graphed, graphed_losses) = runs[False], runs[True]
    loss_gap = ((graphed_losses - plain_losses).abs() / plain_losses.abs()).max().item()
    weights = [(g - p).norm() / p.norm() for g, p in zip(graphed.model.parameters(), plain.model.parameters())]
    ema = [(g - p).norm() / p.norm().clamp(min=1e-12) for g, p in zip(graphed.ema.model.parameters(), plain.ema.model.parameters())]
    return (
        f"{precision}: graph recorded={graphed.graphed}; {steps} steps; largest relative loss difference {loss_gap:.2e}; "
        f"weights {max(weights).item():.2e}; EMA {max(ema).item():.2e}; final loss plain {plain_losses[-1]:.4f} graph {graphed_losses[-1]:.4f}"
    )


if __name__ == "__main__":
    capability = torch.cuda.get_device_capability()
    for precision in ("fp32", "bf16", "fp16") if capability >= (8, 0) else ("fp32", "fp16"):
        print(compare(precision), flush=True)
