"""Notebook 03 refuses a nonsense parameter in its first code cell after the parameters, naming it."""

from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SAMPLING = NOTEBOOKS / "03_reverse_sampling.ipynb"


@pytest.mark.parametrize(
    "name, value, message",
    [("n_samples", 4, "n_samples must be a whole number, from 8 to 64"), ("seed", "-1", "seed must be a whole number, at least 0")],
)
def test_sampling_notebook_refuses_nonsense_naming_the_parameter(tmp_path, name, value, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(SAMPLING), str(tmp_path / "03_out.ipynb"), parameters={name: value, "gif_path": str(tmp_path / "never.gif")},
            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
        )  # fmt: skip
    assert message in str(error.value)
    assert "NotebookParameterError" in str(error.value)
    assert not (tmp_path / "never.gif").exists()
