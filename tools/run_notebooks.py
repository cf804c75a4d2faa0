"""`make run`: the course's notebooks (ddpm_lib.params.COURSE) executed headless into runs/, in a way a newcomer can follow.

    python tools/run_notebooks.py [--from-02] [--runs runs]

For each notebook: a line when it starts, a bar of its cells while it runs (its
clock keeps moving through long cells such as notebook 02's training), and a
line with its time when it ends. Each executed notebook is kept as
runs/NAME.ipynb and as runs/NAME.html, which any browser opens without Jupyter.
The kernel's own log (its warning about TCP without encryption, the
KeyboardInterrupt it logs when it is shut down) goes to runs/logs/NAME.log, not
to the terminal. A failing notebook stops the run with one line naming the
cell, its error and where to look. The last line names the HTML files, the
pictures, and the quality that notebook 02's fresh training run reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from ddpm_lib.params import COURSE
from ddpm_lib.runfolder import RunFolderError, atomic_write, check_writable, open_own_file

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
QUALITY_PREFIX = "this run:"  # how notebook 02 begins the line with the quality its run reached


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message is one line that says where to look."""


def plan(runs: Path, from_02: bool) -> list[tuple[str, dict]]:
    """Each notebook of the course in order, with the parameters that send what it writes into ``runs``
    (paths relative to notebooks/, where the notebooks run); a notebook not named here runs as it is.

    Notebook 02 starts a fresh training run every time: a run left in its folder,
    by `make test` or an earlier `make run`, is kept beside it, never continued.
    """
    training = Path(os.path.relpath(runs / "02_training", NOTEBOOKS))
    sampling = {"gif_path": os.path.relpath(runs / "03_reverse_process.gif", NOTEBOOKS)}
    if from_02:
        sampling["checkpoint"] = str(training / "checkpoint.pt")
    into_runs = {"02_training": {"out_dir": str(training), "resume": False}, "03_reverse_sampling": sampling}
    return [(name, into_runs.get(name, {})) for name in COURSE]


@contextlib.contextmanager
def stderr_into(log: Path):
    """Point file descriptor 2 at ``log`` for the block: the kernel papermill starts inherits it, and its log with it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = open_own_file(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a kernel's log")
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def clock_ticking(bar, every: float = 1.0):
    """Redraw ``bar`` (a tqdm bar) every ``every`` seconds: tqdm redraws only when a cell ends, and training runs for minutes."""
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            bar.refresh()  # takes the bar's lock; a closed bar draws nothing

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def run_notebook(notebook: Path, parameters: dict, runs: Path, terminal) -> Path:
    """Execute ``notebook`` into ``runs``, with its kernel's log in runs/logs/; return the HTML copy's path.

    The HTML is written even when a cell fails, so the error can be read in a browser. papermill
    writes the executed notebook as it goes, into a file made here that no one can have put a link
    at; it takes the notebook's name when the run ends.
    """
    import papermill
    from nbconvert import HTMLExporter

    _register_ticking_engine()
    executed, html, log = runs / f"{notebook.stem}.ipynb", runs / f"{notebook.stem}.html", runs / "logs" / f"{notebook.stem}.log"
    fd, name = tempfile.mkstemp(prefix=f".{notebook.stem}.tmp-{os.getpid()}-", suffix=".ipynb", dir=runs)
    os.close(fd)
    writing = Path(name)
    with stderr_into(log):
        try:
            papermill.execute_notebook(
                str(notebook), str(writing), parameters=parameters, cwd=str(notebook.parent), kernel_name="python3",
                engine_name=TICKING_ENGINE, progress_bar={"desc": f"  {notebook.stem}", "file": terminal, "leave": False},
            )  # fmt: skip
        except papermill.PapermillExecutionError as exc:
            error = f"{exc.ename}: {exc.evalue}".strip().splitlines()[0]
            raise NotebookFailed(f"{notebook.stem} stopped in cell [{exc.exec_count}] with {error}; read {html} and {log}") from None
        finally:
            if writing.stat().st_size:
                os.replace(writing, executed)
                atomic_write(html, lambda tmp: tmp.write_text(HTMLExporter().from_filename(str(executed))[0], encoding="utf-8"))
            else:  # papermill stopped before writing anything
                writing.unlink()
    return html


TICKING_ENGINE = "ddpm-mnist-ticking"


def _register_ticking_engine():
    """papermill's own engine, its bar of cells redrawn every second while a cell runs (``clock_ticking``),
    registered under ``TICKING_ENGINE``: an engine is papermill's way to change how a notebook is executed."""
    from papermill.engines import NBClientEngine, papermill_engines

    class TickingEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            with clock_ticking(nb_man.pbar) if nb_man.pbar else contextlib.nullcontext():
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(TICKING_ENGINE, TickingEngine)


def reached_quality(executed: Path) -> str | None:
    """The quality notebook 02 printed for its run ("85.0% of 500 samples confident, ..."), or None."""
    if not executed.exists():
        return None
    for cell in json.loads(executed.read_text(encoding="utf-8"))["cells"]:
        for output in cell.get("outputs", []):
            for line in "".join(output.get("text", "")).splitlines():
                if line.startswith(QUALITY_PREFIX):
                    return line[len(QUALITY_PREFIX) :].strip()
    return None


def summary(htmls: list[Path], runs: Path, seconds: float) -> str:
    """The last line: where to look (paths as typed from where make started), and how good the fresh run got."""
    grids = [os.path.relpath(grid) for grid in sorted((runs / "02_training").glob("epoch_*.png"))]
    pictures = [f"{grids[0]} to {Path(grids[-1]).name}" if len(grids) > 1 else grids[0]] if grids else []
    pictures += [os.path.relpath(gif) for gif in sorted(runs.glob("*.gif"))]
    quality = reached_quality(runs / "02_training.ipynb")
    return (
        f"Done in {duration(seconds)}. Open in a browser: {', '.join(os.path.relpath(html) for html in htmls)}"
        + (f"; pictures: {', '.join(pictures)}" if pictures else "")
        + (f"; notebook 02's fresh run: {quality}" if quality else "")
    )


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-02", action="store_true", help="sample in notebook 03 from the checkpoint notebook 02 trains, not the shipped weights"
    )
    parser.add_argument("--runs", type=Path, default=REPO / "runs", help="where the executed notebooks, HTML and pictures go")
    args = parser.parse_args(argv)
    runs = args.runs.resolve()
    notebooks = plan(runs, args.from_02)
    try:
        check_writable(runs / "logs" / f"{notebooks[0][0]}.log")  # before the first notebook runs, not after it
        runs.mkdir(parents=True, exist_ok=True)
    except RunFolderError as exc:
        print(f"error: --runs: {exc}", file=sys.stderr)
        return 2
    terminal = os.fdopen(os.dup(2), "w", buffering=1)  # the progress bars stay on the terminal while fd 2 goes to a log
    started, htmls = time.monotonic(), []
    for name, parameters in notebooks:
        began = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: started", flush=True)
        try:
            htmls.append(run_notebook(NOTEBOOKS / f"{name}.ipynb", parameters, runs, terminal))
        except (NotebookFailed, RunFolderError) as failure:  # a cell's error, or a link planted where a file goes
            print(f"error: {failure}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\ninterrupted during {name}; the notebooks finished before it are in {os.path.relpath(runs)}", file=sys.stderr)
            return 130
        print(f"[{time.strftime('%H:%M:%S')}] {name}: finished in {duration(time.monotonic() - began)}", flush=True)
    print(summary(htmls, runs, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
