"""Notebook parameters read the same whether papermill passed them parsed (-p, YAML) or raw (-r)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_lib.params import COURSE, GUIDANCE_NOTEBOOK, SAMPLING_NOTEBOOK, NotebookParameterError, Param, parse_param, validate


@pytest.mark.parametrize("value, expected", [(3, 3), ("3", 3), (" 12 ", 12), ("-2", -2), (3.0, 3), ("3.0", 3), ("1e3", 1000)])
def test_whole_numbers_are_accepted_parsed_or_raw(value, expected):
    parsed = parse_param("epochs", value, int)
    assert parsed == expected and type(parsed) is int


@pytest.mark.parametrize("value", [1.5, "1.5", "three", "", True, None, "None", [3], float("nan"), float("inf")])
def test_anything_else_is_not_a_whole_number(value):
    with pytest.raises(NotebookParameterError) as refused:
        parse_param("epochs", value, int)
    assert str(refused.value) == f"epochs must be a whole number, got {value!r}"


@pytest.mark.parametrize("value, expected", [(0.002, 0.002), ("2e-3", 0.002), (1, 1.0), ("0", 0.0)])
def test_numbers_are_accepted_parsed_or_raw(value, expected):
    parsed = parse_param("lr", value, float)
    assert parsed == expected and type(parsed) is float


@pytest.mark.parametrize("value", ["fast", "nan", "inf", False, None])
def test_anything_else_is_not_a_number(value):
    with pytest.raises(NotebookParameterError, match=r"^lr must be a number, got "):
        parse_param("lr", value, float)


TRUE_SPELLINGS = [True, "true", "True", "TRUE", "yes", "Yes", "1", 1]
FALSE_SPELLINGS = [False, "false", "False", "no", "No", "0", 0]


@pytest.mark.parametrize("value", TRUE_SPELLINGS)
def test_true_in_any_spelling(value):
    assert parse_param("resume", value, bool) is True


@pytest.mark.parametrize("value", FALSE_SPELLINGS)
def test_false_in_any_spelling_is_false(value):
    # papermill -r resume False passes the string "False", which plain Python would call true.
    assert parse_param("resume", value, bool) is False


@pytest.mark.parametrize("value", ["maybe", "", "2", 2, 0.0, None, "None", [True]])
def test_anything_else_is_not_a_yes_or_no(value):
    with pytest.raises(NotebookParameterError) as refused:
        parse_param("resume", value, bool)
    assert str(refused.value) == f"resume must be true or false (also yes/no, 1/0), got {value!r}"


@pytest.mark.parametrize("value", [None, "None", "none", " None "])
def test_none_where_allowed(value):
    assert parse_param("train_subset", value, int, allow_none=True) is None


def test_optional_values_still_parse():
    assert parse_param("train_subset", "10000", int, allow_none=True) == 10_000
    with pytest.raises(NotebookParameterError, match=r"^train_subset must be a whole number, or None, got 'all'$"):
        parse_param("train_subset", "all", int, allow_none=True)


@pytest.mark.parametrize(
    "value", [[16, 32, 64], (16, 32, 64), "[16, 32, 64]", "16,32,64", "(16, 32, 64)", "16 32 64", " [16,32,64] ", ["16", "32", 64.0]]
)
def test_lists_of_whole_numbers_in_every_spelling(value):
    assert parse_param("channels", value, list[int]) == [16, 32, 64]


def test_a_single_number_is_a_list_of_one():
    assert parse_param("step_counts", 20, list[int]) == [20]
    assert parse_param("guidance_weights", "2.5", list[float]) == [2.5]
    assert parse_param("guidance_weights", "[0, 1, 2.5]", list[float]) == [0.0, 1.0, 2.5]


@pytest.mark.parametrize("value", ["[16, 32.5, 64]", "[]", "", "16;32;64", [16, [32]], [16, True, 64], None])
def test_bad_lists_of_whole_numbers_are_refused(value):
    with pytest.raises(NotebookParameterError) as refused:
        parse_param("channels", value, list[int])
    assert str(refused.value) == f"channels must be a non-empty list of whole numbers, got {value!r}"


def test_list_length_and_item_bounds():
    channels = Param(list[int], minimum=1, length=3)
    assert channels.parse("channels", "8,16,16") == [8, 16, 16]
    for bad in ("16,32", "16,32,64,128", "16,0,64"):
        with pytest.raises(NotebookParameterError, match=r"^channels must be a list of 3 whole numbers, each at least 1, got "):
            channels.parse("channels", bad)


def test_choices():
    assert parse_param("schedule", "cosine", str, choices=("linear", "cosine")) == "cosine"
    with pytest.raises(NotebookParameterError) as refused:
        parse_param("schedule", "quadratic", str, choices=("linear", "cosine"))
    assert str(refused.value) == "schedule must be one of 'linear', 'cosine', got 'quadratic'"


def test_text_that_papermill_turned_into_a_number_comes_back_as_text():
    assert parse_param("out_dir", 2024, str) == "2024"
    assert parse_param("out_dir", "../runs/02_training", str) == "../runs/02_training"
    with pytest.raises(NotebookParameterError, match=r"^out_dir must be text, got None$"):
        parse_param("out_dir", None, str)


@pytest.mark.parametrize(
    "rules, value, message",
    [
        (dict(minimum=200, note="the FID needs more digits than its 128 features"), 50,
         "n_per_point must be a whole number, at least 200 (the FID needs more digits than its 128 features), got 50"),
        (dict(minimum=1, maximum=1000), "1001", "n_per_point must be a whole number, from 1 to 1000, got '1001'"),
        (dict(maximum=64), 65, "n_per_point must be a whole number, at most 64, got 65"),
    ],
)  # fmt: skip
def test_bounds_and_notes_are_in_the_message(rules, value, message):
    with pytest.raises(NotebookParameterError) as refused:
        parse_param("n_per_point", value, int, **rules)
    assert str(refused.value) == message


def test_bounds_are_inclusive():
    assert parse_param("n_per_point", "200", int, minimum=200, maximum=200) == 200


def test_an_unsupported_kind_is_a_programming_error():
    with pytest.raises(TypeError, match="Param kind must be"):
        Param(dict)


SPEC = {
    "epochs": Param(int, minimum=1),
    "lr": Param(float, minimum=0),
    "resume": Param(bool),
    "channels": Param(list[int], minimum=1, length=3),
    "train_subset": Param(int, minimum=1, allow_none=True),
}


def test_validate_converts_a_whole_parameters_cell():
    # As papermill -r would leave them, plus a variable of the notebook that is no parameter.
    cell = {"epochs": "5", "lr": "1e-3", "resume": "False", "channels": "[16, 32, 64]", "train_subset": "None", "plots": object()}
    assert validate(cell, SPEC) == {"epochs": 5, "lr": 0.001, "resume": False, "channels": [16, 32, 64], "train_subset": None}


def test_validate_reports_every_bad_parameter_in_one_line():
    cell = {"epochs": 1.5, "lr": 0.002, "resume": "maybe", "channels": [16, 32, 64]}
    with pytest.raises(NotebookParameterError) as refused:
        validate(cell, SPEC)
    assert str(refused.value) == (
        "3 parameters need changing: epochs must be a whole number, at least 1, got 1.5; "
        "resume must be true or false (also yes/no, 1/0), got 'maybe'; "
        "train_subset is missing (it must be a whole number, at least 1, or None)"
    )
    assert isinstance(refused.value, ValueError)


def test_validate_with_one_bad_parameter_says_just_that():
    with pytest.raises(NotebookParameterError) as refused:
        validate({"epochs": 0, "lr": 0.002, "resume": True, "channels": [8, 16, 16], "train_subset": None}, SPEC)
    assert str(refused.value) == "epochs must be a whole number, at least 1, got 0"


# ----- the course's notebooks and their specs ---------------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_the_course_is_every_notebook_in_order():
    assert list(COURSE) == sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("notebook", COURSE)
def test_each_parameters_cell_assigns_the_names_of_its_spec_and_its_defaults_pass(notebook):
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    tagged = ["".join(cell["source"]) for cell in cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == (1 if COURSE[notebook] else 0), "a notebook with a spec has one parameters cell, one without has none"
    for source in tagged:
        names = [node.target.id for node in ast.parse(source).body if isinstance(node, ast.AnnAssign)]
        assert sorted(names) == sorted(COURSE[notebook])
        defaults = {}
        exec(source, defaults)
        assert validate(defaults, COURSE[notebook]) == {name: defaults[name] for name in names}


# Notebook 03's spec, against its parameters cell and as papermill -p and -r deliver values.
SAMPLING = Path(__file__).resolve().parent.parent / "notebooks" / "03_reverse_sampling.ipynb"
SAMPLING_DEFAULTS = {"checkpoint": None, "device": "auto", "n_samples": 16, "seed": 0, "gif_path": "../runs/03_reverse_process.gif"}


def parameters_cell_defaults(notebook: Path) -> dict:
    """NAME: value of every annotated assignment in the notebook's parameters cell."""
    cell = next(c for c in json.loads(notebook.read_text())["cells"] if c.get("id") == "parameters")
    tree = ast.parse("".join(cell["source"]))
    return {node.target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.AnnAssign)}


def test_sampling_notebook_spec_names_every_parameter_of_notebook_03():
    assert parameters_cell_defaults(SAMPLING) == SAMPLING_DEFAULTS
    assert set(SAMPLING_NOTEBOOK) == set(SAMPLING_DEFAULTS)
    assert validate(SAMPLING_DEFAULTS, SAMPLING_NOTEBOOK) == SAMPLING_DEFAULTS


def test_sampling_notebook_reads_raw_papermill_values():
    raw = {"checkpoint": "../runs/02_training/checkpoint.pt", "device": "cpu", "n_samples": "8", "seed": "3", "gif_path": "out.gif"}
    assert validate(raw, SAMPLING_NOTEBOOK) == {**raw, "n_samples": 8, "seed": 3}
    assert validate({**raw, "checkpoint": "None"}, SAMPLING_NOTEBOOK)["checkpoint"] is None


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("n_samples", 7, "n_samples must be a whole number, from 8 to 64 (section 3 takes eight of them as codes; a DDPM run keeps 9 MB per digit), got 7"),
        ("n_samples", 65, "n_samples must be a whole number, from 8 to 64 (section 3 takes eight of them as codes; a DDPM run keeps 9 MB per digit), got 65"),
        ("n_samples", "sixteen", "n_samples must be a whole number, from 8 to 64 (section 3 takes eight of them as codes; a DDPM run keeps 9 MB per digit), got 'sixteen'"),
        ("seed", -1, "seed must be a whole number, at least 0, got -1"),
        ("seed", 1.5, "seed must be a whole number, at least 0, got 1.5"),
        ("device", None, "device must be text, got None"),
        ("gif_path", None, "gif_path must be text, got None"),
    ],
)  # fmt: skip
def test_sampling_notebook_refuses_nonsense_naming_the_parameter(name, value, message):
    with pytest.raises(NotebookParameterError) as refused:
        validate({**SAMPLING_DEFAULTS, name: value}, SAMPLING_NOTEBOOK)
    assert str(refused.value) == message


# ----- notebook 04's spec, GUIDANCE_NOTEBOOK ------------------------------------------------------------------

GUIDANCE_PATH = Path(__file__).resolve().parent.parent / "notebooks" / "04_guidance_and_fast_sampling.ipynb"


def guidance_parameters_cell() -> str:
    cells = json.loads(GUIDANCE_PATH.read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])


def test_guidance_parameters_as_papermill_r_passes_them():
    raw = {
        "checkpoint": "None", "device": "cpu", "seed": "3", "train_epochs": "20", "train_subset": "None", "train_batch_size": "256",
        "train_lr": "2e-3", "train_loss_weighting": "min_snr", "train_channels": "[32, 64, 128]", "train_out_dir": "../runs/04_t4", "n_per_point": "5000",
        "guidance_weights": "[0, 1, 2, 3, 4, 6]", "guidance_steps": "50", "step_counts": "10,20,50,100,1000",
        "guidance_for_steps": "1", "include_ddpm": "True",
    }  # fmt: skip
    assert validate(raw, GUIDANCE_NOTEBOOK) == {
        "checkpoint": None, "device": "cpu", "seed": 3, "train_epochs": 20, "train_subset": None, "train_batch_size": 256,
        "train_lr": 0.002, "train_loss_weighting": "min_snr", "train_channels": [32, 64, 128], "train_out_dir": "../runs/04_t4", "n_per_point": 5000,
        "guidance_weights": [0.0, 1.0, 2.0, 3.0, 4.0, 6.0], "guidance_steps": 50, "step_counts": [10, 20, 50, 100, 1000],
        "guidance_for_steps": 1.0, "include_ddpm": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("n_per_point", 50, "n_per_point must be a whole number, at least 200 (the classifier-FID needs more digits than its 128 features), got 50"),
        ("step_counts", [0, 20], "step_counts must be a non-empty list of whole numbers, each from 1 to 1000, got [0, 20]"),
        ("guidance_weights", "[1, -2]", "guidance_weights must be a non-empty list of numbers, each at least 0, got '[1, -2]'"),
        ("guidance_steps", 1001, "guidance_steps must be a whole number, from 1 to 1000, got 1001"),
        ("include_ddpm", "False!", "include_ddpm must be true or false (also yes/no, 1/0), got 'False!'"),
        ("train_epochs", 0, "train_epochs must be a whole number, at least 1, got 0"),
        ("train_channels", [16, 32], "train_channels must be a list of 3 whole numbers, each at least 8, got [16, 32]"),
        ("train_subset", 70_000, "train_subset must be a whole number, from 1 to 60000, or None, got 70000"),
    ],
)  # fmt: skip
def test_guidance_refusals_name_the_parameter(name, value, message):
    cell = {}
    exec(guidance_parameters_cell(), cell)
    cell[name] = value
    with pytest.raises(NotebookParameterError) as refused:
        validate(cell, GUIDANCE_NOTEBOOK)
    assert str(refused.value) == message


# ----- names papermill was given that the notebook does not have -----------------------------------------------

TRAINING_CELL = (
    "epochs: int = 3\nlr: float = 2e-3\nresume: bool = False\nchannels: list[int] = [16, 32, 64]\ntrain_subset: int | None = None"
)
VALIDATE_CELL = "globals().update(params.validate(globals(), SPEC))"


def as_papermill_left_it(*injected: str, history: tuple[str, ...] = ()) -> dict:
    """The parameters cell's values and IPython's input history (``_ih``): the parameters cell, papermill's cell if
    any, then the cell now running."""
    cell = {"epochs": 3, "lr": 2e-3, "resume": False, "channels": [16, 32, 64], "train_subset": None}
    injected_cell = ["# Parameters\n" + "\n".join(injected)] if injected else []
    return {**cell, "_ih": ["", TRAINING_CELL, *injected_cell, *history, VALIDATE_CELL]}


def test_a_misspelt_papermill_parameter_is_refused_naming_the_real_one():
    with pytest.raises(NotebookParameterError) as refused:
        validate(as_papermill_left_it("epoch = 5", "lr = 0.001"), SPEC)
    assert str(refused.value) == "epoch is not a parameter of this notebook (did you mean epochs?)"


def test_a_name_like_no_parameter_lists_them_all_with_the_other_problems():
    values = {**as_papermill_left_it("n_sample = 8", "epochs = 0"), "epochs": 0}
    with pytest.raises(NotebookParameterError) as refused:
        validate(values, SPEC)
    assert str(refused.value) == (
        "2 parameters need changing: n_sample is not a parameter of this notebook (it has epochs, lr, resume, channels, train_subset); "
        "epochs must be a whole number, at least 1, got 0"
    )


def test_the_notebooks_own_variables_and_its_real_parameters_pass():
    injected = ("epochs = 5", "channels = [\n    8,\n    16,\n    16,\n]")  # papermill formats long values over several lines
    values = {**as_papermill_left_it(*injected), "plots": object(), "Path": object()}
    assert validate(values, SPEC)["epochs"] == 3  # the value is the one in values; the names are what was checked


def test_a_parameters_cell_run_again_since_means_nothing_was_injected():
    # In Jupyter, a notebook papermill wrote may be run again after its injected cell was deleted: the old history stays.
    values = as_papermill_left_it("epoch = 5", history=("import torch", TRAINING_CELL))
    assert validate(values, SPEC)["epochs"] == 3


TINY_SPEC_CELL = (
    "from ddpm_lib import params\n"
    "SPEC = {'epochs': params.Param(int, minimum=1), 'n_samples': params.Param(int, minimum=8), "
    "'out_dir': params.Param(str), 'resume': params.Param(bool)}\n"
    "globals().update(params.validate(globals(), SPEC))\n"
    "print(f'{epochs} epochs, {n_samples} samples, {out_dir}, resume={resume}')"
)


def tiny_notebook(path: Path) -> Path:
    """A notebook with a parameters cell and a cell that validates it, as the course notebooks do."""
    cells = [
        {"id": "parameters", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "execution_count": None,
         "source": "epochs: int = 1\nn_samples: int = 8\nout_dir: str = 'runs/x'\nresume: bool = False"},
        {"id": "validate", "cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": TINY_SPEC_CELL},
    ]  # fmt: skip
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.write_text(json.dumps({"cells": cells, "metadata": kernel, "nbformat": 4, "nbformat_minor": 5}))
    return path


def papermill(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    command = [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "out.ipynb"), "--kernel", "python3", *flags]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)


@pytest.mark.notebook
def test_papermill_names_given_by_every_flag_are_checked(tmp_path):
    (tmp_path / "more.yaml").write_text("epoch: 2\n")
    result = papermill(tmp_path, "-p", "n_sample", "16", "-r", "outdir", "runs/y", "-y", "resum: true", "-f", str(tmp_path / "more.yaml"))
    assert result.returncode != 0
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    (error,) = [output for cell in executed["cells"] for output in cell.get("outputs", []) if output["output_type"] == "error"]
    assert error["ename"] == "NotebookParameterError"
    heading, _, problems = error["evalue"].partition(": ")
    assert heading == "4 parameters need changing" and "\n" not in problems
    assert sorted(problems.split("; ")) == [  # in the order papermill merged the flags
        "epoch is not a parameter of this notebook (did you mean epochs?)",
        "n_sample is not a parameter of this notebook (did you mean n_samples?)",
        "outdir is not a parameter of this notebook (did you mean out_dir?)",
        "resum is not a parameter of this notebook (did you mean resume?)",
    ]


@pytest.mark.notebook
def test_papermill_parameters_the_notebook_has_pass(tmp_path):
    (tmp_path / "more.yaml").write_text("epochs: 2\n")
    result = papermill(
        tmp_path, "-p", "n_samples", "16", "-r", "out_dir", "runs/y", "-y", "resume: true", "-f", str(tmp_path / "more.yaml")
    )
    assert result.returncode == 0, result.stderr
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    printed = "".join(text for cell in executed["cells"] for output in cell.get("outputs", []) for text in output.get("text", ""))
    assert printed == "2 epochs, 16 samples, runs/y, resume=True\n"
