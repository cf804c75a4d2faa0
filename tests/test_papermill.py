"""The notebooks run headless by papermill: retraining exactly as the README shows it, the parameters' documentation,
and nonsense parameters refused in the first cell after them, naming each."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_lib import params

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
@pytest.mark.parametrize("notebook", [name for name, spec in params.COURSE.items() if spec])
def test_help_notebook_documents_every_parameter(notebook):
    # Each notebook's parameters as ddpm_lib.params checks them: papermill must document every one of them. Its parser
    # skips a parameter it cannot read (an annotation such as int | None, a comment holding double quotes): it then
    # vanishes from --help-notebook, and a -p for it draws only a warning.
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOKS / f"{notebook}.ipynb")],
        capture_output=True,
        text=True,
        check=True,
    )
    documented = re.findall(r"^  (\w+): .*\(default .*\)\s*(\S.*)?$", result.stdout, re.MULTILINE)
    assert sorted(name for name, _ in documented) == sorted(params.COURSE[notebook])
    lines = result.stdout.splitlines()
    for k, line in enumerate(lines):  # a help text after the default, or on the next line
        if "(default" in line:
            assert not line.rstrip().endswith(")") or (k + 1 < len(lines) and lines[k + 1].startswith(" " * 20)), f"no help: {line}"


@pytest.mark.notebook
@pytest.mark.parametrize(
    "name, value, message",
    [("n_per_point", 50, "n_per_point must be a whole number, at least 200"), ("step_counts", [0, 20], "step_counts must be")],
)
def test_guidance_notebook_refuses_nonsense_naming_the_parameter(tmp_path, name, value, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(NOTEBOOKS / "04_guidance_and_fast_sampling.ipynb"),
            str(tmp_path / "04_out.ipynb"),
            parameters={name: value},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )
    assert message in str(error.value)


@pytest.mark.notebook
@pytest.mark.parametrize(
    "name, value, message",
    [("n_samples", 4, "n_samples must be a whole number, from 8 to 64"), ("seed", "-1", "seed must be a whole number, at least 0")],
)
def test_sampling_notebook_refuses_nonsense_naming_the_parameter(tmp_path, name, value, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(NOTEBOOKS / "03_reverse_sampling.ipynb"),
            str(tmp_path / "03_out.ipynb"),
            parameters={name: value, "gif_path": str(tmp_path / "never.gif")},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )
    assert message in str(error.value)
    assert "NotebookParameterError" in str(error.value)
    assert not (tmp_path / "never.gif").exists()
