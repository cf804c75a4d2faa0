"""The notebooks' widgets, checked in a real browser.

Each test starts a throwaway JupyterLab on 127.0.0.1, opens a notebook in headless
Chromium (/usr/bin/chromium, driven by Playwright), runs all cells from the Run
menu, checks that no cell shows a traceback, then moves the slider with the
keyboard and changes a dropdown, and checks that the picture changed each time:
the bytes behind the ``ipywidgets.Image``, not merely its blob: URL.

Screenshots (whole page and the widget output, before and after each change) go to
runs/browser-screenshots/<notebook>/; the test prints that path as "screenshots: PATH".

Contract the notebooks keep (a notebook that breaks it fails here):
- all cells run top to bottom in JupyterLab without a traceback, within the
  ``run_all_timeout_s`` below, with DDPM_MNIST_DATA pointing at the repository's data/
  and the contract's ``parameters`` set in a cell after the one tagged "parameters";
- the picture is an ``ipywidgets.Image`` (rendered as ``img.widget-image``);
- the slider is the first ipywidgets slider whose description matches
  ``slider_label`` below (a case-insensitive regex matched from the start, so
  ``t\\b`` means a description "t"); without one, the first slider in the last
  cell output that has sliders is used;
- the dropdown is found the same way with ``dropdown_label``;
- the pictures stay as they are while no control changes (so that a change
  below is the control's doing), and moving the slider to its other end, and
  choosing another dropdown option, each change the bytes of at least one
  widget image within ``redraw_timeout_s``;
- where ``apply_button_label`` is set and such a button exists, the test clicks it
  after changing the dropdown (for controls that only take effect on "Sample").
Concretely (COURSE_NOTEBOOKS below): 01_forward_noising needs a slider "t" and a
dropdown "schedule"; 03_reverse_sampling a slider "t", "step" or "timestep", a
dropdown "sampler", and optionally a button "Sample", "Resample", "Generate" or "Run";
it runs on a small untrained network given as its "checkpoint" (the widgets are
under test here; nbval runs it with the shipped weights).

Chromium and Playwright come from tests/install_browser.sh (run by ``make test``).
Where they are missing and cannot be installed, the tests skip saying why, except
under CI (``$CI`` set), where a browser test that cannot run is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO_ROOT,
    VIEWPORT,
    JupyterLab,
    LabNotebook,
    browser_unavailable_reason,
    copy_notebook_for_lab,
)
from conftest import write_tiny_weights

pytestmark = pytest.mark.browser

SCREENSHOT_ROOT = REPO_ROOT / "runs" / "browser-screenshots"
STILL_SECONDS = 2  # how long the pictures must stay as they are before a control is touched


@dataclass(frozen=True)
class WidgetContract:
    """What the test looks for in one notebook; see the module docstring."""

    notebook: Path
    slider_label: str
    dropdown_label: str
    run_all_timeout_s: float
    redraw_timeout_s: float
    apply_button_label: str | None = None
    parameters: dict | None = None  # set after the notebook's parameters cell: the widgets, not the figures, are tested here
    small_untrained_model: bool = (
        False  # run on conftest's TINY_MODEL, untrained (parameter "checkpoint"): every cell, a fraction of the time
    )


COURSE_NOTEBOOKS = [
    WidgetContract(
        REPO_ROOT / "notebooks" / "01_forward_noising.ipynb",
        slider_label=r"t\b",
        dropdown_label=r"schedule",
        run_all_timeout_s=120,
        redraw_timeout_s=30,
    ),
    WidgetContract(
        REPO_ROOT / "notebooks" / "03_reverse_sampling.ipynb",
        slider_label=r"(t|step|timestep)\b",
        dropdown_label=r"sampler",
        run_all_timeout_s=180,
        redraw_timeout_s=60,
        apply_button_label=r"(sample|resample|generate|run)\b",
        parameters={"n_samples": 8},  # the fewest notebook 03 takes (it reuses eight as codes); nbval runs it as stored
        # Two runs of all 1000 steps (DDPM, and DDIM with T steps) through the shipped network cost about two minutes
        # of the test; nbval runs the notebook with the shipped weights.
        small_untrained_model=True,
    ),
]


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for the whole session, or a skip saying why it cannot run here."""
    reason = browser_unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def jupyter_lab(tmp_path):
    root = tmp_path / "lab-root"
    root.mkdir()
    with JupyterLab(root_dir=root, state_dir=tmp_path / "lab-state") as server:
        yield server


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    yield page
    page.close()


def screenshot_folder(name: str, capsys) -> Path:
    folder = SCREENSHOT_ROOT / name
    if folder.exists():
        shutil.rmtree(folder)  # only this test writes here; stale pictures would mislead
    folder.mkdir(parents=True)
    with capsys.disabled():
        print(f"\nscreenshots: {folder}")
    return folder


def check_widgets_redraw(notebook: LabNotebook, contract: WidgetContract, screenshots: Path) -> None:
    """Run all cells, then slider and dropdown must each change the picture; screenshots throughout."""

    def shoot(step: str, widget) -> None:
        notebook.page.screenshot(path=screenshots / f"{step}-page.png")
        notebook.output_area_of(widget).screenshot(path=screenshots / f"{step}-widgets.png")

    try:
        notebook.open()
        notebook.run_all_cells(timeout_s=contract.run_all_timeout_s)
        errors = notebook.error_outputs()
        assert not errors, f"{notebook.name}: a cell output shows an error:\n{errors[0]}"

        slider = notebook.labelled_widget("widget-slider", contract.slider_label)
        dropdown = notebook.labelled_widget("widget-dropdown", contract.dropdown_label)
        slider.scroll_into_view_if_needed()
        before = notebook.settled_image_digests()
        time.sleep(STILL_SECONDS)
        assert notebook.settled_image_digests() == before, f"{notebook.name}: a picture changed while no control did"
        shoot("1-before", slider)

        old_value, new_value = notebook.move_slider_to_other_end(slider)
        after_slider = notebook.wait_for_image_change(
            before, contract.redraw_timeout_s, f"the slider moved from {old_value:g} to {new_value:g}"
        )
        shoot("2-after-slider", slider)

        old_option, new_option = notebook.choose_another_option(dropdown)
        button = notebook.optional_button(contract.apply_button_label) if contract.apply_button_label else None
        if button is not None:
            button.click()
        notebook.wait_for_image_change(
            after_slider, contract.redraw_timeout_s, f"the dropdown changed from {old_option!r} to {new_option!r}"
        )
        shoot("3-after-dropdown", dropdown)

        errors = notebook.error_outputs()
        assert not errors, f"{notebook.name}: working the widgets produced an error:\n{errors[0]}"
    except Exception:
        notebook.page.screenshot(path=screenshots / "failure-page.png")
        raise


@pytest.mark.parametrize(
    "contract",
    [
        pytest.param(
            contract,
            id=contract.notebook.stem,
            marks=pytest.mark.skipif(not contract.notebook.exists(), reason=f"notebook not written yet: {contract.notebook.name}"),
        )
        for contract in COURSE_NOTEBOOKS
    ],
)
def test_notebook_widgets_redraw_in_browser(contract, jupyter_lab, browser_page, capsys):
    parameters = dict(contract.parameters or {})
    if contract.small_untrained_model:
        parameters["checkpoint"] = str(write_tiny_weights(jupyter_lab.root_dir / "small.safetensors"))
    notebook_copy = copy_notebook_for_lab(contract.notebook, jupyter_lab.root_dir, parameters)
    notebook = LabNotebook(browser_page, jupyter_lab, notebook_copy.name)
    check_widgets_redraw(notebook, contract, screenshot_folder(contract.notebook.stem, capsys))
