"""Bad inputs each get one line that says what to change: weights files, MNIST folders, and `make run`."""

import json
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import save_file

import ddpm_lib.checkpoint as checkpoint
from ddpm_lib.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_model, load_weights, save_weights
from ddpm_lib.cli import main as cli
from ddpm_lib.config import TrainConfig
from ddpm_lib.pretrained import ASSETS
from ddpm_lib.unet import SimpleUNet, UNetConfig

from conftest import TINY_MODEL

CLASSIFIER_WEIGHTS = ASSETS / "ddpm_mnist_classifier.safetensors"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ----------------------------------------------------------------------------- weights files


@pytest.fixture
def tiny_weights() -> dict:
    """The weights of the tiny network, and the config that describes them."""
    torch.manual_seed(0)
    return SimpleUNet(TINY_MODEL).state_dict()


@pytest.fixture
def never_built(monkeypatch):
    """Fail the test if a network is built for real: a refusal must come before any memory is spent."""

    def refuse_to_build(config, device):
        raise AssertionError(f"a {config.model} network was built before the file was checked")

    monkeypatch.setattr(checkpoint, "build_model", refuse_to_build)


def weights_file(path, state: dict, config) -> str:
    save_weights(state, path, config)
    return str(path)


def test_the_classifier_passed_as_a_model_is_one_clear_line(never_built):
    with pytest.raises(CheckpointError) as refused:
        load_model(CLASSIFIER_WEIGHTS, "cpu")
    assert "holds no diffusion model" in one_line(refused.value)


def test_the_cli_refuses_the_classifier_in_one_line(tmp_path, capsys):
    assert cli(["sample", "--checkpoint", str(CLASSIFIER_WEIGHTS), "--n", "1", "--out", str(tmp_path / "d.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "holds no diffusion model" in error and "\n" not in error
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("channels", [[100_000, 100_000, 100_000], [1024, 1024, 1024]])
def test_metadata_claiming_a_wider_network_is_refused_before_building_it(tmp_path, tiny_weights, never_built, channels):
    # 100,000 channels would ask for hundreds of GB; 1,024 is allowed, but not with the tiny tensors in the file.
    config = asdict(TrainConfig(model=TINY_MODEL))
    config["model"]["channels"] = channels
    path = weights_file(tmp_path / "crafted.safetensors", tiny_weights, config)
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert str(channels[0]) in one_line(refused.value) and "metadata was edited" in str(refused.value)


def test_tensors_of_another_shape_are_named_in_one_line(tmp_path, tiny_weights, never_built):
    config = asdict(TrainConfig(model=replace(TINY_MODEL, channels=(16, 16, 16))))
    path = weights_file(tmp_path / "mismatch.safetensors", tiny_weights, config)
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert "time_mlp.0.weight has shape (32, 8), not (64, 16), and 61 more differences" in one_line(refused.value)


def test_missing_and_extra_tensors_are_named(tmp_path, tiny_weights, never_built):
    state = dict(tiny_weights)
    del state["conv_out.bias"]
    state["stowaway"] = torch.zeros(2)
    path = weights_file(tmp_path / "edited.safetensors", state, asdict(TrainConfig(model=TINY_MODEL)))
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert "conv_out.bias is missing, and 1 more differences" in one_line(refused.value)


@pytest.mark.parametrize(
    "model_settings, named",
    [
        ({"groups": 0}, "groups"),  # was a ZeroDivisionError
        ({"channels": ["8", "16", "16"]}, "channels"),  # was quietly turned into numbers
        ({"channels": [8.5, 16, 16]}, "channels"),  # was quietly rounded down
        ({"attention": "no"}, "attention"),  # was True: a non-empty string
        ({"num_classes": 10**9}, "num_classes"),  # a label table of 10^9 rows
        ({"blocks_per_level": 10**6}, "blocks_per_level"),
        ({"shape": "round"}, "shape"),
    ],
)
def test_metadata_of_the_wrong_type_or_size_is_refused_naming_it(tmp_path, tiny_weights, never_built, model_settings, named):
    config = asdict(TrainConfig(model=TINY_MODEL))
    config["model"].update(model_settings)
    path = weights_file(tmp_path / "crafted.safetensors", tiny_weights, config)
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert named in one_line(refused.value) and "no model can have" in str(refused.value)


@pytest.mark.parametrize("config_text", ['"a string"', "[8, 16, 16]", '{"model": [8, 16, 16]}'])
def test_metadata_that_is_no_config_at_all_is_one_line(tmp_path, tiny_weights, never_built, config_text):
    path = tmp_path / "odd.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_weights.items()}, str(path), metadata={"config": config_text})
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert "holds no diffusion model" in one_line(refused.value)


def test_a_checkpoint_whose_tensors_disagree_with_its_config_is_refused(tmp_path, tiny_weights, never_built):
    wider = TrainConfig(model=replace(TINY_MODEL, channels=(16, 32, 32)))
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(wider), "model": tiny_weights, "ema": tiny_weights}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, "cpu")
    assert "do not fit the network its config describes" in one_line(refused.value)


def test_a_checkpoint_without_a_table_of_weights_is_refused(tmp_path, tiny_weights, never_built):
    path = tmp_path / "checkpoint.pt"
    config = asdict(TrainConfig(model=TINY_MODEL))
    torch.save({"format": CHECKPOINT_FORMAT, "config": config, "model": tiny_weights, "ema": list(tiny_weights.values())}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, "cpu")
    assert "no table of weight tensors" in one_line(refused.value)


def test_a_file_that_fits_its_config_still_loads(tmp_path, tiny_weights):
    path = weights_file(tmp_path / "fine.safetensors", tiny_weights, asdict(TrainConfig(model=TINY_MODEL)))
    model, _, config = load_weights(path, "cpu")
    assert config.model == TINY_MODEL and not model.conditional


# ----------------------------------------------------------------------------- UNetConfig itself


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"channels": (100_000, 100_000, 100_000)}, "at most 1024"),
        ({"channels": ("16", "32", "64")}, "channels"),
        ({"channels": 16}, "channels"),
        ({"groups": 0}, "groups"),
        ({"attention": "no"}, "attention"),
        ({"num_classes": True}, "num_classes"),
        ({"blocks_per_level": 5}, "blocks_per_level"),
    ],
)
def test_unet_config_refuses_absurd_or_mistyped_settings_naming_them(settings, named):
    with pytest.raises(ValueError, match=named):
        UNetConfig(**settings)


def test_unet_config_takes_widths_as_any_whole_numbers():
    import numpy as np

    assert UNetConfig(channels=[np.int64(8), 16, 16]).channels == (8, 16, 16)
