"""Tests of ddpm_lib.widgets without a browser: the explorer's state, and what ``show`` publishes.

They must pass with ipywidgets 8 and with 7.7.1 (the version on Google Colab);
to check the latter without touching the venv:

    .venv/bin/pip install --target /tmp/ipw7 --no-deps ipywidgets==7.7.1 \\
        widgetsnbextension==3.6.1 jupyterlab_widgets==1.1.1 ipython_genutils==0.2.0
    PYTHONPATH=/tmp/ipw7 .venv/bin/python -m pytest tests/test_widgets.py

The digits are drawn here rather than loaded, so the tests need no data.
"""

import base64
import io

import ipywidgets
import numpy as np
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output
from PIL import Image

from ddpm_lib.widgets import TITLE_HEIGHT, WIDGET_VIEW_MIMETYPE, ForwardNoisingExplorer, panels_png, show

TIMESTEPS = 1000


def plus_and_bar() -> torch.Tensor:
    """Two 28 x 28 'digits' in [-1, 1]: a plus sign and a vertical bar."""
    images = -torch.ones(2, 1, 28, 28)
    images[0, 0, 12:16, 4:24] = 1
    images[0, 0, 4:24, 12:16] = 1
    images[1, 0, 4:24, 12:16] = 1
    return images


@pytest.fixture
def explorer() -> ForwardNoisingExplorer:
    return ForwardNoisingExplorer(plus_and_bar(), labels=torch.tensor([4, 1]), timesteps=TIMESTEPS)


@pytest.fixture(scope="module")
def ipython_shell():
    """An IPython shell, so that ``display`` publishes MIME bundles that ``capture_output`` can catch."""
    yield InteractiveShell.instance()
    InteractiveShell.clear_instance()


def all_widgets(root: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    return [root] + [w for child in getattr(root, "children", ()) for w in all_widgets(child)]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def published(show_it) -> list[dict]:
    """The MIME bundles that ``show_it()`` displays."""
    with capture_output() as captured:
        show_it()
    return [output.data for output in captured.outputs]


def test_controls_keep_the_names_the_browser_test_looks_for(explorer):
    widgets = all_widgets(explorer.widget)
    (slider,) = [w for w in widgets if isinstance(w, ipywidgets.IntSlider) and w.description == "t"]
    (dropdown,) = [w for w in widgets if isinstance(w, ipywidgets.Dropdown) and w.description == "schedule"]
    (image,) = [w for w in widgets if isinstance(w, ipywidgets.Image)]
    assert (slider, dropdown, image) == (explorer.t, explorer.schedule, explorer.image)
    assert (slider.min, slider.max) == (0, TIMESTEPS - 1)
    assert list(dropdown.options) == ["linear", "cosine"]
    assert image.format == "png"


def test_moving_t_redraws_picture_and_caption(explorer):
    before = (explorer.image.value, explorer.caption.value)
    explorer.t.value = 700
    assert explorer.image.value != before[0]
    assert explorer.caption.value != before[1]
    assert "t = 701</b>" in explorer.caption.value  # the paper's t, one more than the index


def test_switching_schedule_redraws_picture_and_caption(explorer):
    before = (explorer.image.value, explorer.caption.value)
    explorer.schedule.value = "cosine"
    assert explorer.image.value != before[0]
    assert explorer.caption.value != before[1]
    assert "cosine" in explorer.caption.value


def test_picture_is_what_render_draws(explorer):
    explorer.digit.value = 1
    explorer.t.value = 123
    assert explorer.image.value == explorer.render()
    assert Image.open(io.BytesIO(explorer.image.value)).format == "PNG"


def test_x_t_is_the_digit_at_the_first_step_and_forgets_it_at_the_last(explorer):
    x0 = explorer.images[:1]
    explorer.t.value = 0
    assert correlation(explorer.x_t(), x0) > 0.99
    for kind in ("linear", "cosine"):
        explorer.schedule.value = kind
        explorer.t.value = TIMESTEPS - 1
        assert abs(correlation(explorer.x_t(), x0)) < 0.15


def test_each_digit_keeps_its_noise_as_t_moves(explorer):
    explorer.digit.value = 1
    schedule = explorer.schedules["linear"]
    for t in (10, 500, 900):
        explorer.t.value = t
        recovered = schedule.predict_noise(explorer.x_t(), torch.tensor([t]), explorer.images[1:2])
        torch.testing.assert_close(recovered, explorer.noise[1:2], atol=1e-4, rtol=0)
    assert not torch.equal(explorer.noise[0], explorer.noise[1])


def test_callbacks_print_nothing(explorer, capsys):
    explorer.t.value = 42
    explorer.schedule.value = "cosine"
    explorer.digit.value = 1
    assert capsys.readouterr() == ("", "")


def test_panels_png_enlarges_without_blurring():
    # The digits hold only -1 and +1: enlarged without interpolation, the panels are black and white, no grey.
    picture = np.asarray(Image.open(io.BytesIO(panels_png(plus_and_bar(), ["a", "b"], scale=3))))
    assert picture.shape[0] == TITLE_HEIGHT + 28 * 3
    assert set(picture[TITLE_HEIGHT:].flatten()) == {0, 255}


def test_panels_png_lays_panels_side_by_side():
    picture = Image.open(io.BytesIO(panels_png(plus_and_bar(), ["a", "b"], scale=3)))
    assert picture.height > 28 * 3 and 2 * 28 * 3 < picture.width < 3 * 28 * 3
    with pytest.raises(ValueError):
        panels_png(plus_and_bar(), ["only one title"])


@pytest.mark.usefixtures("ipython_shell")
def test_show_publishes_widget_picture_and_stable_text(explorer):
    (bundle,) = published(lambda: show(explorer.widget, explorer.image.value, "forward noising explorer"))
    assert set(bundle) == {WIDGET_VIEW_MIMETYPE, "image/png", "text/plain"}
    assert bundle[WIDGET_VIEW_MIMETYPE] == {"version_major": 2, "version_minor": 0, "model_id": explorer.widget.model_id}
    assert base64.b64decode(bundle["image/png"]) == explorer.image.value
    assert bundle["text/plain"] == "[interactive: forward noising explorer — run the notebook in Jupyter to use the controls]"


@pytest.mark.usefixtures("ipython_shell")
def test_show_publishes_the_same_view_as_ipywidgets_itself(explorer):
    (own,) = published(lambda: display(explorer.widget))
    (ours,) = published(explorer.display)
    assert ours[WIDGET_VIEW_MIMETYPE] == own[WIDGET_VIEW_MIMETYPE]


@pytest.mark.skipif(not hasattr(ipywidgets.Widget, "on_displayed"), reason="ipywidgets 8 has no on_displayed callbacks")
@pytest.mark.usefixtures("ipython_shell")
def test_show_runs_on_displayed_callbacks_like_ipywidgets_7(explorer):
    seen = []
    explorer.widget.on_displayed(seen.append)
    published(explorer.display)
    assert seen == [explorer.widget]
