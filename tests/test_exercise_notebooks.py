"""The exercises of notebooks 02 and 03 do the library's work once solved.

Filled with the notebooks' own published solutions (their "Solution" blocks), the student's ddpm_step and
ddim_step draw notebook 03's digits and the student's training_loss trains beside the library's in notebook 02;
left as shipped, ddpm_lib's functions run, and the page says which ran. The filled solutions count their calls
by the shape of their first tensor, so that the loop's calls (a batch of n_samples digits, of batch_size
digits) are told apart from the checker's (4 or 1), and a last cell prints what the test reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import write_tiny_weights

papermill = pytest.importorskip("papermill")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTION = re.compile(r"<details><summary>Solution</summary>\s*```python\n(.*?)```", re.DOTALL)
STUB = re.compile(r"^def (\w+)\(.*?^    return \.\.\..*?$", re.DOTALL | re.MULTILINE)
COUNTED = """
STUDENT_CALLS = globals().get("STUDENT_CALLS", {{}})
_published_{name} = {name}


def {name}(*args):  # the published solution, each call counted under the shape of its first tensor
    shape = next(str(list(a.shape)) for a in args if hasattr(a, "shape"))
    STUDENT_CALLS.setdefault("{name}", {{}})[shape] = STUDENT_CALLS.get("{name}", {{}}).get(shape, 0) + 1
    return _published_{name}(*args)
"""
REPORT = "REPORT "
N_SAMPLES, BATCH_SIZE, ABLATION_STEPS = 8, 32, 40


def solutions(notebook) -> dict[str, str]:
    found = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for code in SOLUTION.findall(cell.source):
                found[re.match(r"def (\w+)", code).group(1)] = code
    return found


def prepared(path: Path, solved: bool, last_cell: str, report: str):
    """The notebook with each stub replaced by its published solution (if ``solved``), cut after ``last_cell``, and
    ending in a cell that prints ``report``'s JSON; and the names of the exercises it holds."""
    notebook = nbformat.read(path, as_version=4)
    published, exercises = solutions(notebook), []
    for cell in notebook.cells:
        if cell.cell_type == "code" and (stub := STUB.search(cell.source)):
            name = stub.group(1)
            exercises.append(name)
            if solved:
                cell.source = cell.source[: stub.start()] + published[name] + COUNTED.format(name=name) + cell.source[stub.end() :]
    notebook.cells = notebook.cells[: [cell.get("id") for cell in notebook.cells].index(last_cell) + 1]
    notebook.cells.append(nbformat.v4.new_code_cell(f"import json\n\nprint({REPORT!r} + json.dumps({report}))"))
    return notebook, exercises


def execute(notebook, tmp_path: Path, parameters: dict):
    source = tmp_path / "in.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(
        str(source), str(tmp_path / "out.ipynb"), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False
    )
    return nbformat.read(tmp_path / "out.ipynb", as_version=4)


def printed(cell) -> str:
    """What a cell showed as text: its prints and the repr of its last expression."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def read_report(executed) -> dict:
    return json.loads(printed(executed.cells[-1]).split(REPORT, 1)[1])


def by_id(executed, cell_id: str):
    return next(cell for cell in executed.cells if cell.get("id") == cell_id)


def check_lines(executed, exercises: list[str]) -> dict[str, str]:
    """Each exercise's line from the cell that checks it."""
    lines = {}
    for name in exercises:
        cell = next(c for c in executed.cells if c.cell_type == "code" and f'check("{name}", {name})' in c.source)
        lines[name] = next(line for line in printed(cell).splitlines() if f" {name}" in line)
    return lines


@pytest.mark.notebook
@pytest.mark.parametrize("solved", [True, False], ids=["solved", "as shipped"])
def test_training_notebook_trains_with_the_students_loss(tmp_path, solved):
    report = (
        '{"calls": globals().get("STUDENT_CALLS", {}), "yours": loss_choice.yours, '
        '"losses": {name: trainer.losses for name, trainer in loss_runs.items()}}'
    )
    # Up to the last exercise: the training, the ablation and the evaluation after it do not depend on the exercises.
    notebook, exercises = prepared(NOTEBOOKS / "02_training.ipynb", solved, "cell-13", report)
    assert exercises == ["training_loss", "v_target"]
    steps = ABLATION_STEPS if solved else 2  # as shipped, only the library's loss trains: a falling loss is not the question
    parameters = dict(train_subset=512, batch_size=BATCH_SIZE, channels=[8, 16, 16], out_dir=str(tmp_path / "run"), ablation_steps=steps)
    executed = execute(notebook, tmp_path, parameters)
    lines, said, result = check_lines(executed, exercises), printed(by_id(executed, "your-loss")).splitlines()[0], read_report(executed)
    library = result["losses"]["ddpm_lib's diffusion_loss"]
    assert len(library) == steps
    if not solved:
        assert all(line.startswith(f"… {name}: not attempted yet") for name, line in lines.items()), lines
        assert said == "trained with ddpm_lib's diffusion_loss: your training_loss is not attempted yet"
        assert (result["yours"], list(result["losses"])) == (False, ["ddpm_lib's diffusion_loss"])
        return
    assert all(line.startswith(f"✓ {name} matches ddpm_lib on ") for name, line in lines.items()), lines
    assert said == "trained with your training_loss" and result["yours"]
    # Every step of the run beside the library's called the student's loss on a training batch...
    assert result["calls"]["training_loss"][str([BATCH_SIZE, 1, 28, 28])] == ABLATION_STEPS
    yours = result["losses"]["your training_loss"]
    # ... which computed the library's quantity on the same batches and draws, and fell.
    assert yours == pytest.approx(library, rel=1e-3)
    assert sum(yours[-5:]) < 0.8 * sum(yours[:5]), yours


@pytest.mark.notebook
@pytest.mark.parametrize("solved", [True, False], ids=["solved", "as shipped"])
def test_sampling_notebook_draws_with_the_students_steps(tmp_path, solved):
    report = (
        '{"calls": globals().get("STUDENT_CALLS", {}), "T": T, "steps": len(ddim_run.trajectory.timesteps), '
        '"ddim_vs_library": float((ddim_run.images - ddim_sample(model, schedule, n_samples, steps=50, seed=seed).images).abs().max())}'
    )
    # Up to the DDIM run: the cells after it read the two runs whichever steps drew them (nbval runs them all as shipped).
    notebook, exercises = prepared(NOTEBOOKS / "03_reverse_sampling.ipynb", solved, "ddim", report)
    assert exercises == ["posterior_mean", "ddpm_step", "ddim_step"]
    parameters = dict(checkpoint=str(write_tiny_weights(tmp_path / "tiny.safetensors")), n_samples=N_SAMPLES)
    executed = execute(notebook, tmp_path, parameters)
    lines, result = check_lines(executed, exercises), read_report(executed)
    drew_ddpm, drew_ddim = printed(by_id(executed, "full-loop")).splitlines()[0], printed(by_id(executed, "ddim")).splitlines()[0]
    assert result["ddim_vs_library"] < 1e-3  # either way: the same seed, the same digits
    if not solved:
        assert all(line.startswith(f"… {name}: not attempted yet") for name, line in lines.items()), lines
        assert drew_ddpm == "drawn with ddpm_lib's ddpm_step: your ddpm_step is not attempted yet"
        assert drew_ddim == "drawn with ddpm_lib's ddim_step: your ddim_step is not attempted yet"
        assert result["calls"] == {}
        return
    assert all(line.startswith(f"✓ {name} matches ddpm_lib on ") for name, line in lines.items()), lines
    assert (drew_ddpm, drew_ddim) == ("drawn with your ddpm_step", "drawn with your ddim_step")
    batch = str([N_SAMPLES, 1, 28, 28])
    assert result["calls"]["ddpm_step"][batch] == result["T"]  # every step of section 2's run
    assert result["calls"]["ddim_step"][batch] == result["steps"] - 1  # every jump; the last step, onto alpha_bar = 1, is x0_hat
