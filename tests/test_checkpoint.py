import os
import stat
from dataclasses import asdict

import pytest
from conftest import TINY_MODEL, write_tiny_weights

from ddpm_lib.checkpoint import load_weights, read_weights, save_weights
from ddpm_lib.config import TrainConfig
from ddpm_lib.objective import NoiseFromVelocity


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")
def test_weights_files_get_the_mode_of_any_new_file(tmp_path, model):
    # safetensors alone writes 0600; a run folder's ema.safetensors should be as readable as its checkpoint.pt.
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    weights = write_tiny_weights(tmp_path / "ema.safetensors")  # through save_weights
    assert stat.S_IMODE(weights.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)
    loaded, _ = read_weights(weights)
    assert loaded.keys() == model.state_dict().keys()


def test_weights_that_record_no_target_or_schedule_are_read_as_ho_et_al_trained_them(tmp_path, model):
    # Files from before the v target existed record no "prediction": they predict eps, with the linear
    # schedule of those versions, whatever the defaults have become since.
    saved = asdict(TrainConfig(model=TINY_MODEL, prediction="eps", schedule="linear"))
    del saved["prediction"], saved["schedule"]
    save_weights(model.state_dict(), tmp_path / "old.safetensors", saved)
    network, schedule, config = load_weights(tmp_path / "old.safetensors", device="cpu")
    assert (config.prediction, schedule.kind) == ("eps", "linear") != (TrainConfig().prediction, TrainConfig().schedule)
    assert not isinstance(network, NoiseFromVelocity)  # no v-to-eps wrapper
