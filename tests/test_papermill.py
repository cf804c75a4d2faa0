"""Headless retraining with papermill, exactly as the README shows it, and its parameter documentation."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TRAINING = NOTEBOOKS / "02_training.ipynb"


def run_training(tmp_path, **parameters):
    return papermill.execute_notebook(
        str(TRAINING), str(tmp_path / "02_out.ipynb"), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False
    )


@pytest.mark.notebook
def test_retrain_headless(tmp_path):
    out_dir = tmp_path / "run"
    # A narrow network, n_evaluate at its minimum and a two-step ablation: the notebook's own measurements are not
    # what this test is about (and the narrow network checks that channels reaches every cell that builds one).
    run_training(
        tmp_path, epochs=1, train_subset=2048, batch_size=32, channels=[8, 16, 16], out_dir=str(out_dir), n_evaluate=200, ablation_steps=2
    )
    assert (out_dir / "checkpoint.pt").exists() and (out_dir / "epoch_001.png").exists()
    with open(out_dir / "loss_history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 64
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10, "the loss did not fall"


@pytest.mark.notebook
def test_nonsense_parameters_fail_naming_each(tmp_path):
    # One run for all three: the notebook reports every bad parameter at once (params.validate).
    with pytest.raises(papermill.PapermillExecutionError) as error:
        run_training(tmp_path, epochs=-1, schedule="quadratic", resume="maybe", out_dir=str(tmp_path / "run"))
    for message in ("epochs must be a whole number, at least 1", "schedule must be one of", "resume must be true or false"):
        assert message in str(error.value)
    assert not (tmp_path / "run").exists(), "nothing should be written for a refused configuration"


@pytest.mark.slow  # papermill reads the notebook in a Python of its own
def test_help_notebook_documents_every_parameter():
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(TRAINING)], capture_output=True, text=True, check=True
    )
    documented = result.stdout
    names = (
        "epochs",
        "batch_size",
        "lr",
        "warmup_steps",
        "lr_schedule",
        "prediction",
        "loss_weighting",
        "schedule",
        "channels",
        "ema_decay",
        "train_subset",
        "device",
        "amp",
        "out_dir",
        "resume",
        "seed",
        "n_evaluate",
        "ablation_steps",
    )
    for name in names:
        line = next((text for text in documented.splitlines() if text.strip().startswith(f"{name}:")), None)
        assert line is not None, f"{name} missing from papermill --help-notebook"
        assert "(default" in line, f"{name} has no type/default: {line}"
    # Every parameter has a help text (papermill puts it after the default, possibly on the next line).
    assert documented.count("(default") == len(names) and "None for all of them" in documented


GUIDANCE = NOTEBOOKS / "04_guidance_and_fast_sampling.ipynb"
GUIDANCE_PARAMETERS = (
    "checkpoint",
    "device",
    "seed",
    "train_epochs",
    "train_subset",
    "train_batch_size",
    "train_lr",
    "train_channels",
    "train_out_dir",
    "n_per_point",
    "guidance_weights",
    "guidance_steps",
    "step_counts",
    "guidance_for_steps",
    "include_ddpm",
)


@pytest.mark.slow
def test_help_notebook_documents_the_guidance_parameters():
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(GUIDANCE)], capture_output=True, text=True, check=True
    )
    for name in GUIDANCE_PARAMETERS:
        line = next((text for text in result.stdout.splitlines() if text.strip().startswith(f"{name}:")), None)
        assert line is not None and "(default" in line, f"{name} is not documented by papermill --help-notebook"
    assert result.stdout.count("(default") == len(GUIDANCE_PARAMETERS)


@pytest.mark.notebook
@pytest.mark.parametrize(
    "name, value, message",
    [("n_per_point", 50, "n_per_point must be a whole number, at least 200"), ("step_counts", [0, 20], "step_counts must be")],
)
def test_guidance_notebook_refuses_nonsense_naming_the_parameter(tmp_path, name, value, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(GUIDANCE),
            str(tmp_path / "04_out.ipynb"),
            parameters={name: value},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )
    assert message in str(error.value)
