"""Machinery behind tests/test_browser.py: a throwaway JupyterLab server, Debian's
Chromium driven headless through Playwright, and a driver that runs a notebook in
JupyterLab and works its ipywidgets the way a reader would (keyboard, <select>).

Nothing here touches the user's Jupyter set-up: the server gets its own HOME and
Jupyter/IPython/matplotlib folders inside a temporary directory, listens on
127.0.0.1 only, and is stopped (its whole process group, then any kernel it left
behind) when the ``with`` block ends, even on failure.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_SCRIPT = Path(__file__).with_name("install_browser.sh")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Docker's default 64 MB /dev/shm is too small for Chromium's shared memory and crashes tabs.
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 1000}

SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 15
POLL_INTERVAL_S = 0.25


# ---------------------------------------------------------------- availability


def _playwright_importable() -> bool:
    importlib.invalidate_caches()  # pip may have installed it since this process started
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        return False
    return True


def _can_install_chromium() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def browser_unavailable_reason() -> str | None:
    """None when Chromium and Playwright are ready, installing them first where we can; else why not.

    Installing goes through tests/install_browser.sh, the same script ``make test``
    runs, so a root shell on Debian gets the browser test rather than a skip.
    """
    if not (CHROMIUM.exists() and _playwright_importable()) and _can_install_chromium():
        subprocess.run(["sh", str(INSTALL_SCRIPT), sys.prefix], check=False)
    if not _playwright_importable():
        return f"the playwright package is missing: run `sh tests/install_browser.sh {sys.prefix}`"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing and cannot be installed here (needs apt-get and root): run {INSTALL_SCRIPT} as root"
    return None


# ---------------------------------------------------------------- notebooks on disk


def copy_notebook_for_lab(source: Path, destination_dir: Path, parameters: dict | None = None) -> Path:
    """Copy a notebook without outputs, execution counts or saved widget state.

    Stored execution counts would make "every cell has a count" true before
    anything ran, and stored widget views would be dead copies of the live ones.
    Blank code cells are dropped because JupyterLab never gives them a count.
    ``parameters`` are set in a cell right after the one tagged "parameters",
    as papermill does.
    """
    notebook = nbformat.read(source, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if cell.cell_type != "code" or cell.source.strip()]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    if parameters:
        tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
        assert tagged, f"{source.name} has no cell tagged 'parameters' to follow"
        injected = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(f"# Set by the browser test\n{injected}"))
    notebook.metadata.pop("widgets", None)
    destination = destination_dir / source.name
    nbformat.write(notebook, destination)
    return destination


# ---------------------------------------------------------------- the server


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendant_pids(root_pid: int) -> list[int]:
    """Every living descendant of ``root_pid``, read from /proc (kernels run in their own session,
    so killing the server's process group alone would not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces, so split after its closing one.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [root_pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found.extend(kids)
        frontier.extend(kids)
    return found


def _write_lab_settings(config_dir: Path) -> None:
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    overrides = {
        # Without windowing every cell stays in the DOM, so all prompts and outputs can be read.
        "notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        # No news or update toasts over the notebook, and no requests leaving the machine.
        "apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    }
    for relative, values in overrides.items():
        path = settings / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class JupyterLab:
    """``jupyter lab`` serving ``root_dir`` on 127.0.0.1 without token or password.

    All of its state (HOME, Jupyter config/runtime/data, IPython, matplotlib) lives
    under ``state_dir``. Use as a context manager; ``url`` is the server's base URL.
    """

    def __init__(self, root_dir: Path, state_dir: Path):
        self.root_dir = root_dir
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / "jupyter-lab.log"
        self.process: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        folders = {
            "HOME": "home",
            "JUPYTER_CONFIG_DIR": "jupyter-config",
            "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
            "JUPYTER_DATA_DIR": "jupyter-data",
            "IPYTHONDIR": "ipython",
            "MPLCONFIGDIR": "matplotlib",
        }
        env = dict(os.environ)
        for variable, name in folders.items():
            folder = self.state_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            env[variable] = str(folder)
        env.setdefault("DDPM_MNIST_DATA", str(REPO_ROOT / "data"))
        _write_lab_settings(Path(env["JUPYTER_CONFIG_DIR"]))
        return env

    def __enter__(self) -> JupyterLab:
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}",
            "--ServerApp.port_retries=0",  # fail loudly rather than drift to a port we do not know
            "--IdentityProvider.token=",
            "--PasswordIdentityProvider.hashed_password=",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, env=self._environment(), cwd=self.root_dir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def has_connected_idle_kernel(self, notebook_name: str) -> bool:
        """Whether the server runs an idle kernel for that notebook with a browser connected to it."""
        with urllib.request.urlopen(f"{self.url}/api/sessions", timeout=5) as response:
            sessions = json.load(response)
        return any(
            session["path"] == notebook_name and session["kernel"]["execution_state"] == "idle" and session["kernel"]["connections"] > 0
            for session in sessions
        )

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"jupyter lab did not answer on {self.url} in {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM first so the server shuts its kernels down cleanly; SIGKILL whatever is left."""
        if self.process is None or self.process.poll() is not None:
            return
        leftovers = {pid: _command_line(pid) for pid in _descendant_pids(self.process.pid)}
        _send(lambda: os.killpg(self.process.pid, signal.SIGTERM))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        _send(lambda: os.killpg(self.process.pid, signal.SIGKILL))
        for pid, command_line in leftovers.items():
            # The same command line guards against a pid the system has since given to someone else.
            if command_line and _command_line(pid) == command_line:
                _send(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        self.process.wait()


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _send(signal_call) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone, which is what we wanted
        signal_call()


# ---------------------------------------------------------------- the notebook in the browser

# Digest of every ipywidgets.Image's current bytes. The src is a fresh blob: URL on every update,
# even when the bytes are the same, so comparing the src alone would prove nothing.
IMAGE_DIGESTS_JS = """
async (images) => Promise.all(images.map(async (image) => {
    const bytes = await (await fetch(image.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}))
"""
WIDGET_IMAGES = ".jp-Notebook img.widget-image"
PROMPT_WITH_COUNT = re.compile(r"^\[\d+\]:$")
TRACEBACK_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


class LabNotebook:
    """One notebook open in JupyterLab in a Playwright page."""

    def __init__(self, page, server: JupyterLab, name: str):
        self.page = page
        self.server = server
        self.name = name

    def open(self, timeout_s: float = 60) -> None:
        """Load the notebook and wait until its kernel is idle, ready to run cells."""
        self.page.goto(f"{self.server.url}/lab/tree/{self.name}", timeout=timeout_s * 1000)
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
        deadline = time.monotonic() + timeout_s
        # The page shows "idle" for a moment before any kernel exists, so ask the server too.
        while not (self.server.has_connected_idle_kernel(self.name) and self.kernel_status() == "idle"):
            # A notebook without kernelspec metadata asks which kernel to start; the default is ours.
            kernel_dialog = self.page.locator(".jp-Dialog .jp-mod-accept")
            if kernel_dialog.count():
                kernel_dialog.first.click()
            self._fail_if_past(deadline, f"the kernel did not become idle (status {self.kernel_status()!r})")
            time.sleep(POLL_INTERVAL_S)

    def kernel_status(self) -> str | None:
        indicator = self.page.locator(".jp-Notebook-ExecutionIndicator")
        return indicator.first.get_attribute("data-status") if indicator.count() else None

    def run_all_cells(self, timeout_s: float) -> None:
        """Run > Run All Cells from the menu bar, then wait for every code cell to have an
        execution count and the kernel to be idle; stop at the first traceback."""
        self.page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first.click()
        deadline = time.monotonic() + timeout_s
        while True:
            errors = self.error_outputs()
            assert not errors, f"{self.name}: a cell failed while running all cells:\n{errors[0]}"
            status = self.kernel_status()
            assert status != "dead", f"{self.name}: the kernel died while running all cells\n{self.server.log_tail()}"
            prompts = [text.strip() for text in self.page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
            if status == "idle" and prompts and all(PROMPT_WITH_COUNT.match(p) for p in prompts):
                return
            pending = [i for i, p in enumerate(prompts) if not PROMPT_WITH_COUNT.match(p)]
            self._fail_if_past(deadline, f"Run All Cells unfinished: kernel {status!r}, code cells {pending} uncounted")
            time.sleep(POLL_INTERVAL_S * 2)

    def error_outputs(self) -> list[str]:
        """Texts of outputs showing a Python traceback or a widget that failed to render."""
        tracebacks = [text for text in self.page.locator(TRACEBACK_OUTPUT).all_inner_texts() if "Traceback" in text]
        broken_widgets = self.page.locator(".jp-OutputArea-output", has_text="Error displaying widget")
        return tracebacks + broken_widgets.all_inner_texts()

    def labelled_widget(self, css_class: str, label: str | None):
        """The first widget of ``css_class`` whose description matches ``label`` (a regex,
        case-insensitive, from the start); else the first one in the last output holding one."""
        widgets = self.page.locator(f".jp-Notebook .{css_class}")
        assert widgets.count(), f"{self.name}: no .{css_class} widget on the page"
        descriptions = []
        for i in range(widgets.count()):
            description_label = widgets.nth(i).locator(".widget-label")
            description = description_label.first.inner_text().strip() if description_label.count() else ""
            descriptions.append(description)
            if label and re.match(label, description, re.IGNORECASE):
                return widgets.nth(i)
        fallback = self.page.locator(".jp-OutputArea-output", has=self.page.locator(f".{css_class}")).last
        print(f"{self.name}: no .{css_class} described {label!r} in {descriptions}; using the last output's first")
        return fallback.locator(f".{css_class}").first

    def optional_button(self, label: str):
        """The first widget button whose text matches ``label`` (regex from the start), or None."""
        buttons = self.page.locator(".jp-Notebook button.widget-button")
        for i in range(buttons.count()):
            if re.match(label, buttons.nth(i).inner_text().strip(), re.IGNORECASE):
                return buttons.nth(i)
        return None

    def image_digests(self) -> tuple[str, ...] | None:
        """SHA-256 of each widget image's bytes, in page order; None while an update is mid-flight."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            return tuple(self.page.locator(WIDGET_IMAGES).evaluate_all(IMAGE_DIGESTS_JS))
        except PlaywrightError:  # a blob: URL revoked between reading it and fetching it
            return None

    def settled_image_digests(self, timeout_s: float = 30) -> tuple[str, ...]:
        """The image digests once the kernel is idle and two reads in a row agree."""
        deadline = time.monotonic() + timeout_s
        previous = None
        while True:
            current = self.image_digests() if self.kernel_status() == "idle" else None
            if current and current == previous:
                return current
            previous = current
            self._fail_if_past(deadline, "the widget images never settled (is there an ipywidgets.Image on the page?)")
            time.sleep(POLL_INTERVAL_S * 2)

    def wait_for_image_change(self, before: tuple[str, ...], timeout_s: float, cause: str) -> tuple[str, ...]:
        """Poll until some widget image's bytes differ from ``before``; fail naming ``cause`` if none do."""
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.image_digests()
            if current is not None and current != before:
                return self.settled_image_digests()
            assert time.monotonic() < deadline, (
                f"{self.name}: {cause}, but no widget image changed within {timeout_s:.0f} s "
                f"(the callback that redraws the picture is not wired or not working)"
            )
            time.sleep(POLL_INTERVAL_S)

    def move_slider_to_other_end(self, slider) -> tuple[float, float]:
        """Focus the slider's handle and press End (or Home if already at the end), as a keyboard user would.

        Jumping to the far end rather than one step guarantees a different picture even
        when the slider spans more values than the notebook has distinct frames.
        """
        handle = slider.locator("[role=slider]").first
        value = float(handle.get_attribute("aria-valuenow"))
        at_end = value >= float(handle.get_attribute("aria-valuemax"))
        handle.focus()
        handle.press("Home" if at_end else "End")
        deadline = time.monotonic() + 10
        while float(handle.get_attribute("aria-valuenow")) == value:
            self._fail_if_past(deadline, f"the slider did not move from {value} on {'Home' if at_end else 'End'}")
            time.sleep(POLL_INTERVAL_S)
        return value, float(handle.get_attribute("aria-valuenow"))

    def choose_another_option(self, dropdown) -> tuple[str, str]:
        """Select the first option of the dropdown's <select> that is not the current one."""
        select = dropdown.locator("select").first
        current = select.input_value()
        options = select.locator("option").evaluate_all("options => options.map(option => option.value)")
        others = [option for option in options if option != current]
        assert others, f"{self.name}: the dropdown offers only {current!r}, nothing to change to"
        select.select_option(others[0])
        return current, others[0]

    def output_area_of(self, widget):
        """The cell output holding ``widget``: what a screenshot of "the widget area" shows."""
        return widget.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' jp-OutputArea-output ')][1]")

    def _fail_if_past(self, deadline: float, message: str) -> None:
        assert time.monotonic() < deadline, f"{self.name}: {message}"
