"""`make run` (tools/run_notebooks.py): the course's notebooks in order, each announced and timed in one line, the
kernel's log kept off the terminal, a failure in one line, and the last line naming what to open."""

import errno
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_dry_run, one_line

from ddpm_lib import REPO_ROOT


def load_run_notebooks():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO_ROOT / "tools" / "run_notebooks.py")
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
    with tqdm(total=3, file=terminal, unit="cell") as bar, run_notebooks.clock_ticking(bar, every=0.02):
        drawn = terminal.getvalue().count("\r")
        time.sleep(0.2)  # one long cell: no update() from papermill
        assert terminal.getvalue().count("\r") >= drawn + 3, "the bar was not redrawn while the cell ran"
        bar.update(1)


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
