"""Where the arithmetic runs, in which precision, and on how many CPU threads.

Everything that depends on the hardware is decided here, once: which device
"auto" means, which mixed precision suits it, the autocast context the
trainer, the samplers and the evaluator all use (so that one seed gives the
same digits whichever of them draws them), and how many threads CPU training
uses: a count fixed for the whole run, so that a seed gives the same run
whatever else the machine is doing, unless asked to give way to other processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from .constants import ADAPTIVE_THREADS, PRECISIONS, Precision


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto": the GPU when there is one, else the CPU; otherwise the named device, if it exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def resolve_precision(amp: Precision, device: torch.device) -> Precision:
    """fp32, bf16 or fp16 for this device.

    "auto": bf16 on GPUs of compute capability >= 8.0 (A100, H100, RTX 30xx+);
    fp16 with loss scaling below that (T4, V100), where bf16 is emulated and
    slow even when ``torch.cuda.is_bf16_supported()`` says yes; fp32 on CPU,
    where bf16 autocast measured slower for this model (assets/measurements/BENCHMARKS.md).
    """
    if amp not in PRECISIONS:
        raise ValueError(f"amp must be one of {PRECISIONS}, got {amp!r}")
    if amp != "auto":
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA GPU; use 'auto', 'fp32' or 'bf16' on CPU")
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: Precision, cache_casts: bool = True):
    """The network's arithmetic in ``precision`` (a no-op for fp32); the sampler's own maths stays fp32.

    ``cache_casts`` keeps each weight's low-precision copy for the whole block (a sampler calls the
    network many times with the same weights); a CUDA graph must not record such a cache.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache_casts)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are, and so where its inputs must go."""
    return next(model.parameters()).device


# ----- CPU threads beside other processes --------------------------------------------------------


class CpuUse(NamedTuple):
    """A reading of the clocks: wall time, CPU time of the whole machine and of this process (seconds), cores."""

    wall: float
    machine: float
    own: float
    cores: int


def read_cpu_use() -> CpuUse | None:
    """Busy CPU seconds of the cores this process may run on (Linux's /proc/stat), and its own; None elsewhere.

    Only the cores in this process's affinity mask count (``taskset``, some containers); a
    container's CPU quota (``docker --cpus``) is not visible here.
    """
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        busy_ticks, cores = 0, 0
        for line in lines:
            # cpuN  user nice system idle iowait irq softirq steal ...  (clock ticks since boot)
            if not (line.startswith("cpu") and line[3:4].isdigit()):
                continue
            name, *values = line.split()
            if allowed is not None and int(name[3:]) not in allowed:
                continue
            ticks = [int(v) for v in values[:8]]
            busy_ticks += sum(ticks) - ticks[3] - ticks[4]  # everything but idle and iowait
            cores += 1
    except (OSError, ValueError, IndexError):
        return None
    if cores == 0:
        return None
    return CpuUse(time.monotonic(), busy_ticks / os.sysconf("SC_CLK_TCK"), time.process_time(), cores)


class CpuThreads:
    """torch's thread count for CPU training: fixed for the whole run, unless ``"adaptive"`` is asked for.

    ``setting`` is ``TrainConfig.cpu_threads``: None uses torch's count when the run starts, N
    uses N, and either stays for the whole run. The count decides in which order a
    multi-threaded sum adds its parts, so a count that followed the machine's load would make
    the last digits of a run depend on what else was running: the same seed would give another
    run, and a killed and resumed run would differ from an uninterrupted one.

    ``ADAPTIVE_THREADS`` trades that for speed beside other processes. With every core busy,
    OpenMP's threads spin while they wait for each other, and each step waits for the thread
    the OS has descheduled: beside one busy process, the default two threads trained at a
    third of their idle speed, one thread at about its idle speed
    (assets/measurements/BENCHMARKS.md; ``tools/threads.py``). So, at each ``adjust`` (every chunk of ``Trainer`` steps,
    at least ``SETTLE_SECONDS`` apart), it reads how the cores were used since the last reading:

    - all of them busy, more than half a core of it by other processes: one thread fewer;
    - at least half a core idle: one thread more, up to the count it started with.

    One step at a time, because what other processes *use* under contention understates what
    they would use: the count goes down until the cores are no longer crowded, and back up
    when they are free. On an idle machine nothing changes. Off a CPU, or where the cores'
    use cannot be read, it does nothing.
    """

    SETTLE_SECONDS = 1.0  # shorter readings are mostly noise
    MARGIN = 0.5  # cores: less than this of others' use, or of idle time, is noise (a browser tab, a clock)

    def __init__(self, device: torch.device, setting: int | str | None = None, read: Callable[[], CpuUse | None] = read_cpu_use):
        self.read = read
        self.on_cpu = device.type == "cpu"
        adaptive = setting == ADAPTIVE_THREADS
        self.most = torch.get_num_threads() if setting is None or adaptive else setting
        self.count = self.most
        self._last = read() if self.on_cpu and adaptive else None
        self.adaptive = self._last is not None

    @contextmanager
    def applied(self):
        """Run the block with the chosen count; the caller's own setting is back afterwards."""
        if not self.on_cpu:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.count)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def adjust(self) -> None:
        """Called inside ``applied``: one thread fewer or more, from the cores' use since the last reading."""
        if not self.adaptive:
            return
        now = self.read()
        if now is None:
            return
        seconds = now.wall - self._last.wall
        if seconds < self.SETTLE_SECONDS:
            return
        machine = (now.machine - self._last.machine) / seconds  # cores busy, this process included
        others = machine - (now.own - self._last.own) / seconds
        idle = now.cores - machine
        if others > self.MARGIN and idle < self.MARGIN:
            self.count = max(1, self.count - 1)
        elif idle >= self.MARGIN:
            self.count = min(self.most, self.count + 1)
        if self.count != torch.get_num_threads():
            torch.set_num_threads(self.count)
        self._last = now
