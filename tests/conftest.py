"""Shared fixtures: a tiny model configuration that trains in seconds on a CPU."""

import pytest

from ddpm_lib.trainer import TrainConfig
from ddpm_lib.unet import UNetConfig

TINY_MODEL = UNetConfig(channels=(8, 16, 16), attention=False)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        settings = dict(
            epochs=1, batch_size=64, train_subset=256, model=TINY_MODEL, out_dir=str(tmp_path / "run"),
            grid_size=4, grid_steps=2, device="cpu", warmup_steps=10,
        )  # fmt: skip
        return TrainConfig(**{**settings, **overrides})

    return make
