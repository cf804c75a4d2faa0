"""Tests of ReverseSamplingExplorer without a browser: what it draws, and when it samples.

A tiny untrained network and a 50-step schedule keep every run under a second;
what the digits look like does not matter here, only which tensors reach the
picture and how often the sampler runs. Sampler runs are counted by wrapping
``ReverseSamplingExplorer.draw``, through which the explorer draws every run.

Like tests/test_widgets.py, these must pass with ipywidgets 8 and 7.7.1; see
that module for how to run them against 7.7.1.
"""

from __future__ import annotations

import io

import ipywidgets
import pytest
import torch
from PIL import Image

from ddpm_lib import sampling
from ddpm_lib.plots import grid_array
from ddpm_lib.widgets import ReverseSamplingExplorer, SamplingSettings

T = 50  # the length of conftest's schedule fixture
N = 4  # digits per run: enough for a grid, few enough to be quick


@pytest.fixture
def sampler_calls(monkeypatch) -> list[SamplingSettings]:
    """The settings of every run the explorer draws from now on, in order."""
    calls = []
    draw = ReverseSamplingExplorer.draw

    def counting_draw(explorer, settings):
        calls.append(settings)
        return draw(explorer, settings)

    monkeypatch.setattr(ReverseSamplingExplorer, "draw", counting_draw)
    return calls


@pytest.fixture
def explorer(model, schedule, sampler_calls) -> ReverseSamplingExplorer:
    return ReverseSamplingExplorer(model, schedule, n=N, steps=10, seed=0)


def all_widgets(root: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    return [root] + [w for child in getattr(root, "children", ()) for w in all_widgets(child)]


def as_panel(images: torch.Tensor) -> torch.Tensor:
    """What a panel should hold for a batch of digits: their grid, back in [-1, 1]."""
    return torch.from_numpy(grid_array(images)).float() / 127.5 - 1


def test_controls_keep_the_names_the_browser_test_looks_for(explorer):
    widgets = all_widgets(explorer.widget)
    (slider,) = [w for w in widgets if isinstance(w, ipywidgets.IntSlider) and w.description == "t"]
    (dropdown,) = [w for w in widgets if isinstance(w, ipywidgets.Dropdown) and w.description == "sampler"]
    (button,) = [w for w in widgets if isinstance(w, ipywidgets.Button) and w.description == "Sample"]
    (image,) = [w for w in widgets if isinstance(w, ipywidgets.Image)]
    assert (slider, dropdown, button, image) == (explorer.step, explorer.sampler, explorer.sample_button, explorer.image)
    assert list(dropdown.options) == list(sampling.SAMPLER_REGISTRY)
    assert list(explorer.steps.options) == [10, 20, 50]  # the choices that fit in T = 50
    assert image.format == "png"


def test_opens_on_the_finished_samples_of_the_default_run(explorer, sampler_calls):
    assert sampler_calls == [SamplingSettings("ddim", 10, 0)]
    assert (explorer.step.min, explorer.step.max, explorer.step.value) == (0, 9, 9)
    assert explorer.caption.value.startswith("<b>t = 1</b>, step 10 of 10")


def test_moving_t_redraws_from_the_kept_run_without_sampling_again(explorer, sampler_calls):
    before = (explorer.image.value, explorer.caption.value)
    for row in (0, 4, 7):
        explorer.step.value = row
        assert f"<b>t = {explorer.trajectory.timesteps[row] + 1}</b>" in explorer.caption.value
    assert explorer.image.value != before[0]
    assert explorer.caption.value != before[1]
    assert len(sampler_calls) == 1  # the run drawn when the explorer was made


def test_panels_are_x_t_predicted_x0_and_predicted_noise_of_the_chosen_step(explorer, model, schedule):
    # The same settings, drawn directly: the explorer must show exactly this run.
    trajectory = sampling.ddim_sample(model, schedule, N, steps=10, seed=0, return_trajectory=True).trajectory
    for row in (0, 5, 9):
        explorer.step.value = row
        images, titles = explorer.panels()
        for panel, expected in zip(images, (trajectory.x_t, trajectory.x0_pred, trajectory.noise_pred), strict=True):
            torch.testing.assert_close(panel[0], as_panel(expected[row]))
        assert titles == [f"x_t at t = {trajectory.timesteps[row] + 1}", "predicted x_0", "predicted noise"]
        assert explorer.image.value == explorer.render()
    assert Image.open(io.BytesIO(explorer.image.value)).format == "PNG"


def test_changing_the_sampler_waits_for_sample(explorer, sampler_calls):
    image = explorer.image.value
    explorer.sampler.value = "ddpm"
    assert len(sampler_calls) == 1
    assert explorer.image.value == image
    assert "press <b>Sample</b>" in explorer.caption.value
    assert explorer.steps.disabled  # DDPM visits all T steps

    explorer.sample_button.click()
    assert sampler_calls[1:] == [SamplingSettings("ddpm", T, 0)]
    assert explorer.trajectory.timesteps == list(reversed(range(T)))
    assert (explorer.step.max, explorer.step.value) == (T - 1, T - 1)
    assert explorer.image.value != image
    assert "Sample" not in explorer.caption.value


def test_a_new_seed_draws_new_digits_on_sample(explorer, sampler_calls):
    old_trajectory, old_image = explorer.trajectory, explorer.image.value
    explorer.seed.value = 1
    explorer.sample_button.click()
    assert sampler_calls[1:] == [SamplingSettings("ddim", 10, 1)]
    assert not torch.equal(explorer.trajectory.x_t, old_trajectory.x_t)
    assert explorer.image.value != old_image


def test_going_back_to_earlier_settings_reuses_their_run(explorer, sampler_calls):
    first = explorer.trajectory
    explorer.steps.value = 20
    explorer.sample_button.click()
    explorer.steps.value = 10
    explorer.sample_button.click()
    assert sampler_calls == [SamplingSettings("ddim", 10, 0), SamplingSettings("ddim", 20, 0)]
    assert explorer.trajectory is first


def test_only_the_most_recent_runs_are_kept(explorer, sampler_calls, monkeypatch):
    monkeypatch.setattr(ReverseSamplingExplorer, "RUNS_KEPT", 2)
    for seed in (1, 2):
        explorer.seed.value = seed
        explorer.sample_button.click()
    assert list(explorer.runs) == [SamplingSettings("ddim", 10, 1), SamplingSettings("ddim", 10, 2)]
    explorer.seed.value = 0
    explorer.sample_button.click()
    assert sampler_calls[-1] == SamplingSettings("ddim", 10, 0)  # dropped, so drawn again


def test_a_remembered_run_is_shown_without_sampling(explorer, sampler_calls, model, schedule):
    ddpm_run = sampling.ddpm_sample(model, schedule, N, seed=0, return_trajectory=True)
    explorer.remember(ddpm_run.trajectory, "ddpm", seed=0)
    explorer.sampler.value = "ddpm"
    explorer.sample_button.click()
    assert len(sampler_calls) == 1
    assert explorer.trajectory is ddpm_run.trajectory


def test_remember_refuses_runs_that_cannot_be_ours(explorer, model, schedule):
    other_n = sampling.ddim_sample(model, schedule, N + 1, steps=10, return_trajectory=True).trajectory
    with pytest.raises(ValueError, match="n = 4"):
        explorer.remember(other_n, "ddim", seed=0)
    with pytest.raises(ValueError, match="sampler"):
        explorer.remember(explorer.trajectory, "euler", seed=0)


def test_a_failed_run_is_reported_in_the_caption(explorer, monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    shown, image = explorer.shown, explorer.image.value
    monkeypatch.setattr(sampling, "sample_steps", out_of_memory)
    explorer.seed.value = 5
    explorer.sample_button.click()
    assert "failed</b>: RuntimeError: out of memory" in explorer.caption.value
    assert (explorer.shown, explorer.image.value) == (shown, image)
    assert capsys.readouterr() == ("", "")


def test_callbacks_print_nothing(explorer, capsys):
    explorer.step.value = 3
    explorer.sampler.value = "ddpm"
    explorer.seed.value = 2
    explorer.sample_button.click()
    explorer.step.value = 10
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"n": 0}, "n must be"), ({"sampler": "euler"}, "sampler must be"), ({"steps": 7}, "steps must be one of")],
)
def test_bad_arguments_raise(model, schedule, arguments, message):
    with pytest.raises(ValueError, match=message):
        ReverseSamplingExplorer(model, schedule, **arguments)
