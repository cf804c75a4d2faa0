"""The trainer: the loss falls on real MNIST, its schedule and EMA are the formulas, resuming is exact, the graphed
step's warm-up is undone, and bad checkpoints and run folders are refused clearly."""

import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, one_line

import ddpm_lib.trainer as trainer_module
from ddpm_lib.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from ddpm_lib.config import TrainConfig
from ddpm_lib.trainer import EMA, Trainer, _restore_in_place, _snapshot, train
from ddpm_lib.unet import SimpleUNet, UNetConfig


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow  # 200 steps
def test_loss_falls_on_real_digits(tiny_config):
    # The eps target and linear schedule, so that the arithmetic below holds whatever the default target is.
    result = train(tiny_config(epochs=4, train_subset=3200, prediction="eps", schedule="linear"), progress=False)  # 200 steps
    first, last = result.losses[:20], result.losses[-20:]
    # An untrained net outputs zeros, so the loss starts at E[eps^2] = 1 (times min-SNR's weights, most of them 1).
    assert sum(first) / 20 > 0.6
    assert sum(last) / 20 < 0.35, f"loss did not fall enough: {sum(first) / 20:.3f} -> {sum(last) / 20:.3f}"


@pytest.mark.slow  # two trainings
def test_run_writes_grids_history_and_checkpoint(tiny_config):
    config = tiny_config(epochs=2)
    train(config, progress=False)
    out = config.out_dir
    for name in ("epoch_001.png", "epoch_002.png", "loss_history.csv", "checkpoint.pt"):
        assert (Path(out) / name).exists(), name
    lines = (Path(out) / "loss_history.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss" and len(lines) == 1 + 2 * 4
    assert read_checkpoint(Path(out) / "checkpoint.pt")["epoch"] == 2


@pytest.mark.slow  # three runs of three epochs
def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_config, tmp_path, monkeypatch):
    straight = train(tiny_config(epochs=3, out_dir=str(tmp_path / "straight")), progress=False)

    # Interrupt in the middle of epoch 2 (after one finished epoch plus 2 steps).
    calls = {"n": 0}
    real_loss = trainer_module.diffusion_loss

    def loss_then_interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 4 + 3:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(trainer_module, "diffusion_loss", loss_then_interrupt)
    interrupted = tiny_config(epochs=3, out_dir=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, progress=False)
    monkeypatch.setattr(trainer_module, "diffusion_loss", real_loss)
    assert read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1

    resumed = train(interrupted, resume=True, progress=False)
    assert state_equal(straight.model, resumed.model)
    assert state_equal(straight.ema_model, resumed.ema_model)
    assert straight.losses == resumed.losses


def test_existing_checkpoint_is_not_overwritten_without_resume(tiny_config):
    config = tiny_config()
    train(config, progress=False)
    before = (Path(config.out_dir) / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        train(config, progress=False)
    assert (Path(config.out_dir) / "checkpoint.pt").read_bytes() == before


def test_truncated_checkpoint_gives_clear_error(tiny_config):
    config = tiny_config()
    train(config, progress=False)
    path = Path(config.out_dir) / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        train(config, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_foreign_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "someone_elses.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="not a ddpm_lib training checkpoint"):
        load_checkpoint(path)


def test_checkpoint_from_another_config_is_refused(tiny_config):
    train(tiny_config(), progress=False)
    wider = tiny_config(epochs=2, model=UNetConfig(channels=(16, 16, 16), attention=False))
    with pytest.raises(CheckpointError, match=re.escape("model.channels: checkpoint [8, 16, 16], requested [16, 16, 16]")):
        train(wider, resume=True, progress=False)


@pytest.mark.parametrize(
    "field, value",
    [("epochs", -1), ("batch_size", 0), ("lr", float("nan")), ("schedule", "quadratic"), ("amp", "fp8"), ("train_subset", 0)],
)
def test_nonsense_settings_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.slow  # two trainings
def test_resume_refuses_changed_settings_unless_allowed_and_records_them(tiny_config):
    train(tiny_config(), progress=False)
    changed = tiny_config(epochs=2, lr=1e-3)
    with pytest.raises(CheckpointError, match=re.escape("lr: checkpoint 0.002, requested 0.001")):
        train(changed, resume=True, progress=False)
    train(changed, resume=True, progress=False, allow_changes=True)
    history = read_checkpoint(Path(changed.out_dir) / "checkpoint.pt")["history"]
    assert history == [{"step": 4, "changes": ["lr: checkpoint 0.002, requested 0.001"]}]


@pytest.mark.slow  # two trainings
def test_resume_may_add_epochs_but_not_remove_them(tiny_config):
    train(tiny_config(epochs=2), progress=False)
    with pytest.raises(CheckpointError, match="already done 2 epochs"):
        train(tiny_config(epochs=1), resume=True, progress=False)


def test_resume_without_a_checkpoint_says_so(tiny_config):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tiny_config(), resume=True, progress=False)


def test_a_second_writer_is_refused_and_the_folder_untouched(tiny_config):
    from ddpm_lib.runfolder import RunFolderBusy, RunLock

    config = tiny_config()
    with RunLock(config.out_dir), pytest.raises(RunFolderBusy, match="in use"):
        train(config, progress=False)
    assert not (Path(config.out_dir) / "checkpoint.pt").exists()


def test_ema_weights_are_written_before_the_checkpoint(tiny_config, monkeypatch):
    # A kill between the two writes must never leave a checkpoint newer than its EMA file.
    written = []
    real = trainer_module.atomic_write
    monkeypatch.setattr(trainer_module, "atomic_write", lambda path, write: written.append(Path(path).name) or real(path, write))
    train(tiny_config(), progress=False)
    assert written.index("ema.safetensors") < written.index("checkpoint.pt")


@pytest.mark.slow  # two trainings
def test_every_step_sees_a_full_batch(tiny_config):
    # 300 digits in batches of 64: four full batches per epoch, the remainder skipped (CUDA graphs need one shape).
    result = train(tiny_config(train_subset=300, epochs=2), progress=False)
    assert result.steps_done == 8 and len(result.losses) == 8


def test_training_leaves_the_callers_random_numbers_alone(tiny_config):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_config(), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    images = torch.zeros(640, 1, 28, 28)
    trainer = Trainer(
        TrainConfig(out_dir=None, epochs=10, batch_size=64, lr=1e-3, warmup_steps=10, lr_schedule="cosine", model=TINY_MODEL, device="cpu"),
        progress=False,
        images=images,
        labels=torch.zeros(640, dtype=torch.long),
    )
    assert trainer.total_steps == 100
    assert trainer.learning_rate(0) == pytest.approx(1e-4) and trainer.learning_rate(9) == pytest.approx(1e-3)
    assert trainer.learning_rate(55) == pytest.approx(0.5e-3) and trainer.learning_rate(100) == pytest.approx(0.0, abs=1e-12)


def test_ema_update_takes_a_tensor_weight_as_a_cuda_graph_needs():
    model = SimpleUNet(TINY_MODEL)
    by_float, by_tensor = EMA(model, 0.9, 10), EMA(model, 0.9, 10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    by_float.update(model, 0.25)
    by_tensor.update(model, torch.tensor(0.25))
    for a, b, p in zip(by_float.model.parameters(), by_tensor.model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, p - 0.75)  # theta_ema + 0.25 (theta - theta_ema), theta = theta_ema + 1


def test_warm_up_updates_are_undone_in_place():
    # The CUDA graph is recorded after a few real updates; undoing them must leave a trainer that
    # continues exactly as one that never warmed up, with every tensor still at its old address.
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(512, 1, 28, 28, generator=generator) * 2 - 1, torch.zeros(512, dtype=torch.long)
    config = TrainConfig(out_dir=None, epochs=5, batch_size=64, model=TINY_MODEL, device="cpu", warmup_steps=5)
    plain, warmed = (Trainer(config, progress=False, images=images, labels=labels) for _ in range(2))
    for trainer in (plain, warmed):  # the loss scaler of fp16 on a GPU, which torch also runs on a CPU
        trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    plain.train_steps(2)
    warmed.train_steps(1)  # optimizer and scaler state exist, as they do after a resume
    addresses = [p.data_ptr() for p in warmed.model.parameters()]
    saved = _snapshot(warmed)
    for _ in range(3):
        warmed.optimizer.zero_grad(set_to_none=True)
        warmed.update(images[:64], torch.randint(0, 1000, (64,)), torch.randn(64, 1, 28, 28), None, 0.5)
    _restore_in_place(warmed, saved)
    assert [p.data_ptr() for p in warmed.model.parameters()] == addresses
    warmed.train_steps(1)
    for a, b in zip(plain.model.parameters(), warmed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert plain.losses == warmed.losses
    assert plain.scaler.state_dict() == warmed.scaler.state_dict()  # its count of steps since the scale last changed too


# no run folder -------------------------------------------------------------------------------------------------


def test_the_library_refuses_to_train_into_no_folder():
    with pytest.raises(ValueError) as refused:
        train(TrainConfig(out_dir="", model=TINY_MODEL), progress=False)
    assert one_line(refused.value).startswith("train writes a run folder, but out_dir is ''")
