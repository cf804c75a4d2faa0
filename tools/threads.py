"""(Maintainers) the CPU trainer beside a busy process: images per second for each thread setting.

    python tools/threads.py            # about 2 minutes; run it with nothing else on the machine

A student's laptop always runs something else. With every core busy, OpenMP's
worker threads spin while they wait for each other, and a step that needs all
of them waits for the one the OS has descheduled. This times the default
training step (``ddpm_lib.bench.train_throughput``) in a fresh process for each
setting (OMP_WAIT_POLICY is read once, when torch loads its OpenMP runtime):
torch's thread count (1, or one per core) and OpenMP's wait policy (spinning,
the default, or passive), and the trainer's opt-in governor (``cpu_threads="adaptive"``,
``device.CpuThreads``: torch's default count, lowered while other processes keep cores
busy), with the machine otherwise idle and then beside one process that keeps one core busy.
The governor is not the default: a thread count that changes within a run changes the order
of its sums, and so the run's last digits (the same seed must give the same run).
"""

from __future__ import annotations

import os
import subprocess
import sys

MEASURE = """
from ddpm_lib.bench import train_throughput
from ddpm_lib.config import TrainConfig
print(train_throughput(TrainConfig(device="cpu", cpu_threads={threads!r}), seconds={seconds})[0])
"""
BUSY = "while True: pass"  # one core's worth of someone else's work


def images_per_second(threads: int | str, wait_policy: str | None, seconds: float) -> float:
    """``threads``: a fixed count, or "adaptive" for the trainer's governor (``device.CpuThreads``)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    code = MEASURE.format(threads=threads, seconds=seconds)
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def main(seconds: float = 8.0) -> None:
    cores = os.cpu_count() or 1
    settings = [(threads, policy) for threads in sorted({1, cores}) for policy in (None, "PASSIVE")] + [("adaptive", None)]
    print("| threads | OMP_WAIT_POLICY | idle (img/s) | beside one busy process (img/s) |\n|---|---|---|---|")
    for threads, policy in settings:
        idle = images_per_second(threads, policy, seconds)
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            contended = images_per_second(threads, policy, seconds)
        finally:
            busy.kill()
        shown = threads if threads != "adaptive" else f"adaptive: {cores}, fewer beside busy processes"
        print(f"| {shown} | {policy or 'default (spin)'} | {idle:.0f} | {contended:.0f} |", flush=True)


if __name__ == "__main__":
    main()
