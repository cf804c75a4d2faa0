import os
import stat
from dataclasses import asdict

import pytest

from conftest import TINY_MODEL
from ddpm_lib.checkpoint import read_weights, save_weights
from ddpm_lib.config import TrainConfig


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")
def test_weights_files_get_the_mode_of_any_new_file(tmp_path, model):
    # safetensors alone writes 0600; a run folder's ema.safetensors should be as readable as its checkpoint.pt.
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    weights = tmp_path / "ema.safetensors"
    state = model.state_dict()  # conftest's untrained TINY_MODEL
    save_weights(state, weights, asdict(TrainConfig(model=TINY_MODEL)))
    assert stat.S_IMODE(weights.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)
    loaded, _ = read_weights(weights)
    assert loaded.keys() == state.keys()
