"""Notebook 04's table of digit grids: one row of panels per model."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from ddpm_lib.plots import plot_model_rows


def batch(n=20):
    return torch.rand(n, 1, 28, 28) * 2 - 1


def test_one_row_of_panels_per_model_titled_by_setting():
    figure = plot_model_rows(
        {"yours": {"w = 0": batch(), "w = 1": batch()}, "shipped": {"w = 0: 3 of 20": batch(), "w = 1: 20 of 20": batch()}}
    )
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["w = 0", "w = 1", "w = 0: 3 of 20", "w = 1: 20 of 20"]
    assert [ax.get_ylabel() for ax in figure.axes] == ["yours", "", "shipped", ""]


def test_models_with_different_numbers_of_panels_are_refused():
    with pytest.raises(ValueError, match="same number of panels"):
        plot_model_rows({"yours": {"w = 0": batch()}, "shipped": {"w = 0": batch(), "w = 1": batch()}})
