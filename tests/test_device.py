"""CpuThreads: one count for the whole run by default; asked to adapt, fewer torch threads while other processes keep the cores busy."""

from __future__ import annotations

import pytest
import torch

from ddpm_lib.config import TrainConfig
from ddpm_lib.device import ADAPTIVE_THREADS, CpuThreads, CpuUse, read_cpu_use
from ddpm_lib.trainer import Trainer

CPU = torch.device("cpu")


class FakeMachine:
    """Clock readings as a CpuThreads sees them: ``others`` cores busy elsewhere, ``mine`` in this process."""

    def __init__(self, cores=2):
        self.cores, self.wall, self.machine, self.own = cores, 0.0, 0.0, 0.0

    def run(self, seconds, others, mine):
        self.wall += seconds
        self.machine += (others + mine) * seconds
        self.own += mine * seconds

    def read(self):
        return CpuUse(self.wall, self.machine, self.own, self.cores)


@pytest.fixture
def two_threads(monkeypatch):
    """torch starts with two threads; what the governor sets is recorded, not applied."""
    chosen = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: chosen[-1] if chosen else 2)
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    return chosen


def test_threads_drop_beside_a_busy_process_and_come_back(two_threads):
    machine = FakeMachine(cores=2)
    threads = CpuThreads(CPU, ADAPTIVE_THREADS, read=machine.read)
    with threads.applied():
        machine.run(10, others=0.0, mine=2.0)  # idle machine: keep both
        threads.adjust()
        assert threads.count == 2
        machine.run(10, others=0.3, mine=1.7)  # a little background work is noise
        threads.adjust()
        assert threads.count == 2
        machine.run(10, others=0.7, mine=1.3)  # a busy process gets its share of two crowded cores: one fewer
        threads.adjust()
        assert threads.count == 1
        machine.run(10, others=1.0, mine=1.0)  # still there: stay at one, never below
        threads.adjust()
        assert threads.count == 1
        machine.run(10, others=0.1, mine=1.0)  # it has stopped: back to two, never more
        threads.adjust()
        assert threads.count == 2
        machine.run(10, others=0.0, mine=1.2)
        threads.adjust()
        assert threads.count == 2
    assert two_threads[-1] == 2 and 1 in two_threads  # lowered inside the block, the caller's count restored after it


def test_several_busy_processes_bring_it_down_step_by_step(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    machine = FakeMachine(cores=4)
    threads = CpuThreads(CPU, ADAPTIVE_THREADS, read=machine.read)
    with threads.applied():
        counts = []
        for _ in range(4):  # three busy processes share the crowded cores with our threads
            runnable = 3 + threads.count
            machine.run(10, others=3 * 4 / runnable, mine=threads.count * 4 / runnable)
            threads.adjust()
            counts.append(threads.count)
        assert counts == [3, 2, 1, 1]  # what others *used* understated what they wanted: it kept going down
        for expected in (2, 3, 4, 4):  # they have stopped
            machine.run(10, others=0.0, mine=threads.count)
            threads.adjust()
            assert threads.count == expected


def test_short_readings_change_nothing(two_threads):
    machine = FakeMachine()
    threads = CpuThreads(CPU, ADAPTIVE_THREADS, read=machine.read)
    with threads.applied():
        machine.run(0.2, others=2.0, mine=0.0)
        threads.adjust()
        assert threads.count == 2


def test_a_reading_that_fails_later_changes_nothing(two_threads):
    machine = FakeMachine()
    readings = iter([machine.read(), None])
    threads = CpuThreads(CPU, ADAPTIVE_THREADS, read=lambda: next(readings))
    with threads.applied():
        threads.adjust()
        assert threads.count == 2


def test_a_fixed_count_is_used_as_given(monkeypatch):
    machine = FakeMachine()
    threads = CpuThreads(CPU, 1, read=machine.read)
    before = torch.get_num_threads()
    with threads.applied():
        assert torch.get_num_threads() == 1
        machine.run(10, others=0.0, mine=1.0)
        threads.adjust()
        assert threads.count == 1 and not threads.adaptive
    assert torch.get_num_threads() == before


def test_without_a_reading_or_off_a_cpu_nothing_changes():
    assert not CpuThreads(CPU, ADAPTIVE_THREADS, read=lambda: None).adaptive
    assert not CpuThreads(torch.device("cuda"), ADAPTIVE_THREADS, read=FakeMachine().read).adaptive


def test_by_default_the_count_stays_whatever_the_load(two_threads):
    # The count decides the order of multi-threaded sums: following the load would change a run's last digits.
    machine = FakeMachine(cores=2)
    threads = CpuThreads(CPU, read=machine.read)
    with threads.applied():
        for _ in range(3):
            machine.run(10, others=2.0, mine=1.0)
            threads.adjust()
    assert not threads.adaptive and threads.count == 2 and set(two_threads) == {2}


def test_the_machine_reading_is_plausible():
    first = read_cpu_use()
    if first is None:  # not Linux
        return
    sum(i * i for i in range(200_000))  # some CPU time of our own
    second = read_cpu_use()
    assert first.cores >= 1 and second.wall > first.wall
    assert second.own > first.own and second.machine >= first.machine


def test_the_trainer_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    config = TrainConfig(
        device="cpu", batch_size=16, out_dir=None, cpu_threads=before + 1, model={"channels": (8, 16, 16), "attention": False}
    )
    trainer = Trainer(config, progress=False, images=images, labels=torch.zeros(64, dtype=torch.long))
    trainer.train_steps(2)
    assert torch.get_num_threads() == before
