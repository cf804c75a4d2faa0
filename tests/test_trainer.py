"""Training on real MNIST: the loss falls, resuming is exact, and bad checkpoints are refused clearly."""

import re

import pytest
import torch

import ddpm_lib.trainer as trainer_module
from ddpm_lib.trainer import CheckpointError, TrainConfig, load_checkpoint, read_checkpoint, train


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_falls_on_real_digits(tiny_config):
    result = train(tiny_config(epochs=4, train_subset=3200), progress=False)  # 200 steps
    first, last = result.losses[:20], result.losses[-20:]
    # An untrained net outputs zeros, so the loss starts at E[eps^2] = 1.
    assert sum(first) / 20 > 0.6
    assert sum(last) / 20 < 0.35, f"loss did not fall enough: {sum(first) / 20:.3f} -> {sum(last) / 20:.3f}"


def test_run_writes_grids_history_and_checkpoint(tiny_config):
    config = tiny_config(epochs=2)
    train(config, progress=False)
    out = config.out_dir
    for name in ("epoch_001.png", "epoch_002.png", "loss_history.csv", "checkpoint.pt"):
        assert (trainer_module.Path(out) / name).exists(), name
    lines = (trainer_module.Path(out) / "loss_history.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss" and len(lines) == 1 + 2 * 4
    assert read_checkpoint(trainer_module.Path(out) / "checkpoint.pt")["epoch"] == 2


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
    before = (trainer_module.Path(config.out_dir) / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        train(config, progress=False)
    assert (trainer_module.Path(config.out_dir) / "checkpoint.pt").read_bytes() == before


def test_truncated_checkpoint_gives_clear_error(tiny_config):
    config = tiny_config()
    train(config, progress=False)
    path = trainer_module.Path(config.out_dir) / "checkpoint.pt"
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
    wider = tiny_config(epochs=2, model=trainer_module.UNetConfig(channels=(16, 16, 16), attention=False))
    with pytest.raises(CheckpointError, match=re.escape("(8, 16, 16)")):
        train(wider, resume=True, progress=False)


@pytest.mark.parametrize(
    "field, value",
    [("epochs", -1), ("batch_size", 0), ("lr", float("nan")), ("schedule", "quadratic"), ("amp", "fp8"), ("train_subset", 0)],
)
def test_nonsense_settings_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
