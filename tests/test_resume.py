"""Resuming is whole: the run folder agrees with its checkpoint, epochs are passes over the digits, a damaged
checkpoint is one line naming its field, and a killed run resumed beside a busy process is the uninterrupted run."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, write_tiny_weights

import ddpm_lib.trainer as trainer_module
from ddpm_lib import REPO_ROOT
from ddpm_lib.checkpoint import CheckpointError, read_checkpoint, read_weights
from ddpm_lib.trainer import Trainer, train


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished one-epoch run of the tiny network (4 steps of 64 digits), its folder kept as trained."""
    out = tmp_path_factory.mktemp("resume") / "run"
    config = tiny(out, epochs=1)
    train(config, progress=False)
    return out


def tiny(out: Path, **overrides):
    from ddpm_lib.config import TrainConfig

    settings = dict(
        epochs=1, batch_size=64, train_subset=256, model=TINY_MODEL, out_dir=str(out), grid_size=4, grid_steps=2, device="cpu", warmup_steps=10
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def copy_of(run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(run, tmp_path / "run")


def loss_rows(run: Path) -> list[tuple[int, int, str]]:
    with open(run / "loss_history.csv", newline="") as f:
        return [(int(row["step"]), int(row["epoch"]), row["loss"]) for row in csv.DictReader(f)]


def assert_folder_agrees_with_checkpoint(run: Path):
    """The EMA file holds the checkpoint's EMA weights, the loss history its losses, and no grid is ahead of it."""
    ckpt = read_checkpoint(run / "checkpoint.pt")
    ema, _ = read_weights(run / "ema.safetensors")
    assert ema.keys() == ckpt["ema"].keys() and all(torch.equal(ema[k], ckpt["ema"][k].float()) for k in ema)
    assert [loss for _, _, loss in loss_rows(run)] == [f"{loss:.6f}" for loss in ckpt["losses"].tolist()]
    grids = sorted(p.name for p in run.glob("epoch_*.png"))
    assert grids == [f"epoch_{k:03d}.png" for k in range(1, ckpt["epoch"] + 1)]


# ----------------------------------------------------------------------------- the folder agrees with the checkpoint


@pytest.mark.parametrize("ema_file", ["missing", "foreign"])
def test_resuming_a_finished_run_rewrites_its_ema_file(one_epoch, tmp_path, ema_file):
    run = copy_of(one_epoch, tmp_path)
    if ema_file == "missing":
        (run / "ema.safetensors").unlink()
    else:
        write_tiny_weights(run / "ema.safetensors")  # an untrained network's weights: not this run's
    result = train(tiny(run, epochs=1), resume=True, progress=False)
    assert result.epochs_done == 1
    assert_folder_agrees_with_checkpoint(run)


def test_a_kill_between_the_ema_file_and_the_checkpoint_leaves_nothing_ahead_after_a_resume(tmp_path, monkeypatch):
    # Killed after epoch 2's grid, loss history and EMA file were written, before its checkpoint: all three are one epoch ahead.
    run = tmp_path / "run"
    real_write = trainer_module.atomic_write
    checkpoints = []

    def killed_before_the_second_checkpoint(path, write):
        if Path(path).name == "checkpoint.pt":
            checkpoints.append(path)
            if len(checkpoints) == 2:
                raise KeyboardInterrupt
        return real_write(path, write)

    monkeypatch.setattr(trainer_module, "atomic_write", killed_before_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, epochs=2), progress=False)
    monkeypatch.setattr(trainer_module, "atomic_write", real_write)
    assert (run / "epoch_002.png").exists() and len(loss_rows(run)) == 8, "the kill did not leave epoch 2's files"

    # --epochs equal to the checkpoint's: nothing to train, and the folder must still say epoch 1.
    train(tiny(run, epochs=1), resume=True, progress=False)
    assert_folder_agrees_with_checkpoint(run)


def test_a_missing_grid_of_the_checkpoints_epoch_is_drawn_again(one_epoch, tmp_path):
    run = copy_of(one_epoch, tmp_path)
    (run / "epoch_001.png").unlink()
    train(tiny(run, epochs=1), resume=True, progress=False)
    assert (run / "epoch_001.png").read_bytes() == (one_epoch / "epoch_001.png").read_bytes()


# ----------------------------------------------------------------------------- epochs are passes over the digits


def test_a_changed_batch_size_counts_epochs_by_the_digits_seen(one_epoch, tmp_path, monkeypatch):
    run = copy_of(one_epoch, tmp_path)
    seen = []
    real_step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, indices: seen.append(indices.clone()) or real_step(self, indices))
    result = train(tiny(run, epochs=2, batch_size=32), resume=True, progress=False, allow_changes=True)
    # Epoch 1 ran 4 steps of 64 digits; epoch 2 is one pass over the 256 digits at 32 a step: 8 steps.
    assert result.steps_done == 4 + 8 and len(seen) == 8
    assert sorted(torch.cat(seen).tolist()) == list(range(256)), "epoch 2 did not see every digit once"
    assert [epoch for _, epoch, _ in loss_rows(run)] == [1] * 4 + [2] * 8
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["epoch_ends"] == [4, 12]


def test_the_network_cannot_change_on_resume_even_with_allow_changes(one_epoch, tmp_path):
    run = copy_of(one_epoch, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    wider = tiny(run, epochs=2, model=replace(TINY_MODEL, channels=(16, 16, 16)))
    with pytest.raises(CheckpointError) as refused:
        train(wider, resume=True, progress=False, allow_changes=True)
    message = str(refused.value)
    assert "model.channels: checkpoint [8, 16, 16], requested [16, 16, 16]" in message and "\n" not in message
    assert "keeps its network, even with --allow-changes" in message
    assert (run / "checkpoint.pt").read_bytes() == before


# ----------------------------------------------------------------------------- a damaged checkpoint, one line naming its field


def without(key):
    return lambda ckpt: ckpt.pop(key)


def setting(key, value):
    return lambda ckpt: ckpt.__setitem__(key, value)


@pytest.mark.parametrize(
    "damage, field",
    [
        pytest.param(setting("epoch", "1"), "epoch", id="epoch as text"),
        pytest.param(setting("epoch", -1), "epoch", id="negative epoch"),
        pytest.param(setting("step", -4), "step", id="negative step"),
        pytest.param(setting("step", 10**15), "losses", id="a step of 10^15"),  # trained nothing and said done
        pytest.param(without("rng"), "rng", id="no rng"),
        pytest.param(setting("rng", {"noise": torch.zeros(10, dtype=torch.uint8)}), "rng", id="not a generator's state"),
        pytest.param(without("optimizer"), "optimizer", id="no optimizer"),
        pytest.param(lambda ckpt: ckpt["optimizer"]["param_groups"].clear(), "optimizer", id="no parameter groups"),
        pytest.param(
            lambda ckpt: next(iter(ckpt["optimizer"]["state"].values())).__setitem__("exp_avg", torch.zeros(3)),
            "optimizer",
            id="a moment of another shape",
        ),
        pytest.param(lambda ckpt: ckpt.__setitem__("losses", ckpt["losses"].tolist()), "losses", id="losses a list"),
        pytest.param(without("scaler"), "scaler", id="no scaler"),
        pytest.param(setting("history", "none"), "history", id="history as text"),
        pytest.param(setting("epoch_ends", [4, 2]), "epoch_ends", id="epochs ending out of order"),
    ],
)
def test_damaged_bookkeeping_is_one_line_naming_the_field(one_epoch, tmp_path, damage, field):
    run = copy_of(one_epoch, tmp_path)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    damage(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError) as refused:
        train(tiny(run, epochs=2), resume=True, progress=False)
    message = str(refused.value)
    assert message.startswith(f"{run / 'checkpoint.pt'}: {field} ") and "\n" not in message
    assert "start a new run in another out_dir" in message
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before, "a refused resume changed the folder"


# ----------------------------------------------------------------------------- the same run whatever else the machine does


def every_tensor(value, name=""):
    """(name, tensor) for every tensor in a checkpoint, however deeply nested."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from every_tensor(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from every_tensor(item, f"{name}[{i}]")


# A training run in a Python of its own: argv is the TrainConfig's settings as JSON, then "resume" or "new", then
# the network call at which the process kills itself (0: none). After an uninterrupted run in the same process if asked.
TRAIN_IN_A_CHILD = """
import json, os, signal, sys
import torch
import ddpm_lib.trainer as trainer_module
from ddpm_lib import REPO_ROOT
from ddpm_lib.config import TrainConfig
from ddpm_lib.device import CpuThreads

settings, how, killed_at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(2)  # a count a governor could lower
CpuThreads.SETTLE_SECONDS = 0.0  # and would, at every chunk of steps
if how == "straight-then-new":
    trainer_module.train(TrainConfig(**{**settings, "out_dir": settings["out_dir"] + "-straight"}), progress=False)
calls, real_loss = [], trainer_module.diffusion_loss

def loss_then_killed(*args):
    calls.append(1)
    if len(calls) == killed_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(*args)

trainer_module.diffusion_loss = loss_then_killed
trainer_module.train(TrainConfig(**settings), resume=how == "resume", progress=False)
"""


@pytest.fixture
def busy_core():
    """Start a process that keeps a core busy, as a student's other programs would."""
    started = []
    yield lambda: started.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.slow  # two Pythons of their own
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the cores' use from /proc/stat, and kills with SIGKILL")
def test_a_run_killed_and_resumed_beside_a_busy_process_is_the_uninterrupted_run(tmp_path, busy_core):
    busy_core()
    run = tmp_path / "run"
    settings = asdict(tiny(run, epochs=2, train_subset=128))  # two epochs of two steps
    # Two threads that wait passively: spinning ones beside a busy process make each step take seconds.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE"}

    def child(how: str, killed_at: int) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", TRAIN_IN_A_CHILD, json.dumps(settings), how, str(killed_at)]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    killed = child("straight-then-new", killed_at=2 + 1)  # killed in the middle of epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    resumed = child("resume", killed_at=0)
    assert resumed.returncode == 0, resumed.stderr

    expected = dict(every_tensor(read_checkpoint(tmp_path / "run-straight" / "checkpoint.pt")))
    found = dict(every_tensor(read_checkpoint(run / "checkpoint.pt")))
    assert found.keys() == expected.keys()
    differing = [name for name in expected if not torch.equal(found[name], expected[name])]
    assert differing == [], f"{len(differing)} of {len(expected)} tensors differ, e.g. {differing[:3]}"
    assert (run / "epoch_002.png").read_bytes() == (tmp_path / "run-straight" / "epoch_002.png").read_bytes()
