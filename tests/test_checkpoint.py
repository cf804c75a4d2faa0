"""Models on disk: weights files and checkpoints written and read back, and every file a model cannot be built
from refused in one line before any memory is spent on it."""

import os
import stat
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch
from conftest import TINY_MODEL, one_line, refused_in_one_line, write_tiny_weights
from safetensors.torch import save_file

import ddpm_lib.checkpoint as checkpoint
from ddpm_lib import REPO_ROOT
from ddpm_lib.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_model, load_weights, read_weights, save_weights
from ddpm_lib.cli import main
from ddpm_lib.config import TrainConfig
from ddpm_lib.objective import NoiseFromVelocity
from ddpm_lib.pretrained import ASSETS
from ddpm_lib.unet import SimpleUNet


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
    # A file that records no "prediction" was written by a version that trained only eps, on the linear schedule:
    # it is read so, whatever the defaults are.
    saved = asdict(TrainConfig(model=TINY_MODEL, prediction="eps", schedule="linear"))
    del saved["prediction"], saved["schedule"]
    save_weights(model.state_dict(), tmp_path / "old.safetensors", saved)
    network, schedule, config = load_weights(tmp_path / "old.safetensors", device="cpu")
    assert (config.prediction, schedule.kind) == ("eps", "linear") != (TrainConfig().prediction, TrainConfig().schedule)
    assert not isinstance(network, NoiseFromVelocity)  # no v-to-eps wrapper


# refusals: weights files a model cannot be built from, one line each -------------------------------------------


CLASSIFIER_WEIGHTS = ASSETS / "ddpm_mnist_classifier.safetensors"


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
    assert main(["sample", "--checkpoint", str(CLASSIFIER_WEIGHTS), "--n", "1", "--out", str(tmp_path / "d.png")]) == 2
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


def test_weights_holding_nan_are_refused_at_load(tmp_path, tiny_weights, capsys):
    state = dict(tiny_weights)
    state["conv_out.weight"] = torch.full_like(state["conv_out.weight"], float("nan"))
    path = weights_file(tmp_path / "diverged.safetensors", state, asdict(TrainConfig(model=TINY_MODEL)))
    with pytest.raises(CheckpointError) as refused:
        load_weights(path, "cpu")
    assert one_line(refused.value).startswith(f"{path}: conv_out.weight holds NaN or infinite values")
    error = refused_in_one_line(["sample", "--checkpoint", path, "--n", 2, "--steps", 2, "--out", tmp_path / "d.png"], capsys)
    assert "holds NaN or infinite values" in error and not (tmp_path / "d.png").exists()


def test_a_checkpoint_whose_weights_hold_inf_is_refused(tmp_path, tiny_weights):
    state = {**tiny_weights, "time_mlp.0.bias": torch.full_like(tiny_weights["time_mlp.0.bias"], float("inf"))}
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(TrainConfig(model=TINY_MODEL)), "model": tiny_weights, "ema": state}, path)
    with pytest.raises(CheckpointError, match=r"time_mlp\.0\.bias holds NaN or infinite values"):
        load_checkpoint(path, "cpu")


def test_a_conditional_model_of_other_classes_than_the_digits_is_one_line(tmp_path, capsys):
    five_classes = replace(TINY_MODEL, num_classes=5)
    torch.manual_seed(0)
    path = weights_file(tmp_path / "five.safetensors", SimpleUNet(five_classes).state_dict(), asdict(TrainConfig(model=five_classes)))
    args = ["sample", "--conditional", "--checkpoint", path, "--n", 10, "--steps", 2, "--out", tmp_path / "d.png"]
    error = refused_in_one_line(args, capsys)
    assert (
        error
        == f"error: {path} is a class-conditional model of 5 classes, not of the 10 digits that sampling asks for; give a model trained on MNIST with --conditional"
    )


def test_the_caller_says_what_to_change_for_a_model_of_the_other_kind(tmp_path):
    # Notebook 04 names its own parameter, not the command line's flags.
    remedy = "set checkpoint to None (the shipped conditional model) or to a checkpoint trained with --conditional"
    with pytest.raises(ValueError) as refused:
        load_model(write_tiny_weights(tmp_path / "tiny.safetensors"), "cpu", conditional=True, remedy=remedy)
    assert one_line(refused.value) == f"{tmp_path / 'tiny.safetensors'} is an unconditional model; {remedy}"


def test_a_folder_named_like_weights_is_one_line(tmp_path, capsys):
    (tmp_path / "x.safetensors").mkdir()
    error = refused_in_one_line(["sample", "--checkpoint", tmp_path / "x.safetensors", "--out", tmp_path / "d.png"], capsys)
    assert error == f"error: {tmp_path / 'x.safetensors'} is a folder, not a weights file; give the path of the file itself"


@pytest.mark.slow  # a Python of its own, which old versions left waiting for ever
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")
@pytest.mark.parametrize("name", ["weights.safetensors", "checkpoint.pt"])
def test_a_fifo_given_as_the_checkpoint_does_not_hang(tmp_path, name):
    os.mkfifo(tmp_path / name)
    command = [sys.executable, "-m", "ddpm_lib", "sample", "--checkpoint", str(tmp_path / name), "--out", str(tmp_path / "d.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"{tmp_path / name} is a FIFO (named pipe), not a {'checkpoint' if name.endswith('.pt') else 'weights file'}; give the path of the file itself"
    )
