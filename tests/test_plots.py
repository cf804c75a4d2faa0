"""The figures of ddpm_lib.plots that say more than a picture: notebook 02's loss curves (one run, or several on
one pair of axes), notebook 03's forward/reverse chain and notebook 04's table of digit grids, one row of panels per model, and its quality against the number of steps."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from ddpm_lib import plots

TS = [0, 1, 300, 301, 1000]


def chain_images(k: int) -> torch.Tensor:
    return torch.rand((k, 1, 28, 28), generator=torch.Generator().manual_seed(0)) * 2 - 1


def texts(ax) -> list[str]:
    return [text.get_text() for text in ax.texts if text.get_text()]  # the arrows are annotations without text


def test_one_panel_per_state_in_order_with_its_image():
    figure = plots.plot_markov_chain(chain_images(len(TS)), TS, timesteps=1000)
    try:
        assert isinstance(figure, Figure)
        states = [ax for ax in figure.axes if ax.get_label() == "state"]
        assert [ax.get_title() for ax in states] == ["$x_0$: data", "$x_{1}$", "$x_{300}$", "$x_{301}$", "$x_{1000}$: noise"]
        assert all(len(ax.images) == 1 and ax.images[0].get_array().shape == (28, 28) for ax in states)
        assert len(figure.axes) == 2 * len(TS) - 1, "one connector between each pair of neighbours"
    finally:
        plt.close(figure)


def test_connectors_name_one_step_conditionals_and_count_the_steps_of_a_gap():
    figure = plots.plot_markov_chain(chain_images(len(TS)), TS, posterior=True)
    try:
        connectors = [ax for ax in figure.axes if ax.get_label() != "state"]
        first, gap, middle, last = (texts(ax) for ax in connectors)
        assert first == ["$q(x_{1} \\mid x_{0})$", "$p_\\theta(x_{0} \\mid x_{1})$"], "no posterior KL for the decoder step to x_0"
        assert middle == ["$q(x_{301} \\mid x_{300})$", "$p_\\theta(x_{300} \\mid x_{301})$", "fit to $q(x_{300} \\mid x_{301}, x_0)$"]
        assert "299 steps of $q$" in gap and "299 steps of $p_\\theta$" in gap
        assert "699 steps of $q$" in last
        assert all(len([c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]) == 2 for ax in connectors)
    finally:
        plt.close(figure)


def test_a_figure_is_drawn_without_error():
    figure = plots.plot_markov_chain(chain_images(2), [999, 1000], timesteps=1000)
    try:
        figure.canvas.draw()
    finally:
        plt.close(figure)


@pytest.mark.parametrize(
    "images, ts", [(chain_images(3), [0, 1]), (chain_images(3), [0, 5, 5]), (chain_images(2), [3, 1]), (chain_images(1), [-1])]
)
def test_mismatched_or_unordered_timesteps_are_refused(images, ts):
    with pytest.raises(ValueError):
        plots.plot_markov_chain(images, ts)


# ----- notebook 04's table of digit grids


def batch(n=20):
    return torch.rand(n, 1, 28, 28) * 2 - 1


def test_one_row_of_panels_per_model_titled_by_setting():
    figure = plots.plot_model_rows(
        {"yours": {"w = 0": batch(), "w = 1": batch()}, "shipped": {"w = 0: 3 of 20": batch(), "w = 1: 20 of 20": batch()}}
    )
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["w = 0", "w = 1", "w = 0: 3 of 20", "w = 1: 20 of 20"]
    assert [ax.get_ylabel() for ax in figure.axes] == ["yours", "", "shipped", ""]


def test_models_with_different_numbers_of_panels_are_refused():
    with pytest.raises(ValueError, match="same number of panels"):
        plots.plot_model_rows({"yours": {"w = 0": batch()}, "shipped": {"w = 0": batch(), "w = 1": batch()}})


def test_one_run_keeps_its_two_lines():
    axes = plots.plot_loss([1.0, 0.8, 0.6, 0.5], "loss", window=2).axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["per step", "mean of 2 steps"]


def test_named_runs_share_the_axes_and_the_later_ones_are_dashed():
    # Two runs that lie on top of each other (a student's loss and the library's) must both stay visible.
    runs = {"ddpm_lib's diffusion_loss": [1.0, 0.8, 0.6, 0.5], "your training_loss": [1.0, 0.8, 0.6, 0.5]}
    lines = plots.plot_loss(runs, "loss", window=2).axes[0].get_lines()
    assert [(line.get_label(), line.get_linestyle()) for line in lines] == [
        ("ddpm_lib's diffusion_loss, per step", "-"),
        ("ddpm_lib's diffusion_loss, mean of 2 steps", "-"),
        ("your training_loss, per step", "--"),
        ("your training_loss, mean of 2 steps", "--"),
    ]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()


# Rows as the measurement file writes them (assets/measurements/cpu_dpm_solver_*.csv), deliberately out of order.
STEP_ROWS = [
    {"sampler": "dpm_solver", "steps": 10, "n": 2000, "confident": 0.887, "fid": 0.694, "floor_fid": 0.186},
    {"sampler": "ddim", "steps": 50, "n": 2000, "confident": 0.915, "fid": 0.390, "floor_fid": 0.186},
    {"sampler": "ddim", "steps": 5, "n": 2000, "confident": 0.800, "fid": 4.106, "floor_fid": 0.186},
    {"sampler": "dpm_solver", "steps": 5, "n": 2000, "confident": 0.847, "fid": 1.745, "floor_fid": 0.186},
]


def test_quality_by_steps_draws_one_line_per_sampler_through_its_rows():
    confident_ax, fid_ax = plots.plot_quality_by_steps(STEP_ROWS).axes
    confident = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in confident_ax.get_lines()}
    assert list(confident) == ["DDIM", "DPM-Solver++ (2M)"]  # the registry's order and labels
    assert confident["DDIM"][0] == [5, 50] and confident["DDIM"][1] == pytest.approx([80.0, 91.5])
    assert confident["DPM-Solver++ (2M)"][0] == [5, 10] and confident["DPM-Solver++ (2M)"][1] == pytest.approx([84.7, 88.7])
    fid = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fid_ax.get_lines()}
    assert fid == {
        "DDIM": ([5, 50], [4.106, 0.390]),
        "DPM-Solver++ (2M)": ([5, 10], [1.745, 0.694]),
        "real digits, N = 2,000": ([0, 1], [0.186, 0.186]),
    }
    assert fid_ax.get_yscale() == "log"


@pytest.mark.parametrize(
    "change, message",
    [({"sampler": "euler"}, "not registered: \\['euler'\\]"), ({"n": 1000}, "N = \\[1000, 2000\\]")],
)
def test_quality_by_steps_refuses_unknown_samplers_and_mixed_sample_sizes(change, message):
    with pytest.raises(ValueError, match=message):
        plots.plot_quality_by_steps([*STEP_ROWS, {**STEP_ROWS[0], **change}])
