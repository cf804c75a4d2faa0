"""(Maintainers) why ``checkpoint.build_model`` puts the network in channels_last: the same step timed both ways.

    python tools/memory_format.py      # about three minutes on the 2-core CPU; run it with nothing else on the machine

In channels_last the channels of a pixel sit next to each other in memory, the
order oneDNN's convolution kernels prefer on a CPU; torch's default (NCHW)
stores each channel as a separate 28x28 plane. Timed here: one training step's
forward and backward at the default widths, and one sampling call (no
gradients) at the shipped unconditional weights' widths, at one thread (as
``make test`` runs) and at torch's default count.
"""

from __future__ import annotations

import copy
import time

import torch

from ddpm_lib.unet import SimpleUNet, UNetConfig

ROUNDS = 3
CASES = [  # (what, widths, batch, with gradients)
    ("training step (forward + backward)", (16, 32, 64), 64, True),
    ("training step (forward + backward)", (16, 32, 64), 128, True),
    ("sampling call (forward only)", (32, 64, 128), 16, False),
    ("sampling call (forward only)", (16, 32, 64), 200, False),
]


def milliseconds(model: torch.nn.Module, batch: int, gradients: bool, input_format: torch.memory_format, repeats: int = 5) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 1, 28, 28), generator=generator).contiguous(memory_format=input_format)
    t = torch.randint(0, 1000, (batch,), generator=generator)

    def once():
        with torch.set_grad_enabled(gradients):
            out = model(x, t)
            if gradients:
                model.zero_grad(set_to_none=True)
                out.pow(2).mean().backward()

    once()  # the first call picks the kernels
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    default_threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}; time per call, fastest of {ROUNDS} rounds (saved against NCHW)\n\n"
        "| threads | what | widths | batch | NCHW (ms) | network in channels_last (ms) | network and input in channels_last (ms) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for what, widths, batch, gradients in CASES:
            torch.manual_seed(0)
            model = SimpleUNet(UNetConfig(channels=widths))
            twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
            # Alternated and the fastest of three rounds kept: this machine's speed drifts within a minute.
            runs = [(model, torch.contiguous_format), (twin, torch.contiguous_format), (twin, torch.channels_last)]
            rounds = [[milliseconds(net, batch, gradients, fmt) for net, fmt in runs] for _ in range(ROUNDS)]
            plain, model_only, both = (min(times) for times in zip(*rounds))
            print(
                f"| {threads} | {what} | {'-'.join(map(str, widths))} | {batch} | {plain:.0f} | {model_only:.0f} ({1 - model_only / plain:.0%}) "
                f"| {both:.0f} ({1 - both / plain:.0%}) |",
                flush=True,
            )
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
