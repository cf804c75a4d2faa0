"""Tests of GuidanceExplorer without a browser: which runs it draws, what reaches the picture, and its refusals.

A tiny conditional network with random weights keeps every run well under a
second; what its digits look like does not matter, only which labels, weights
and seeds reach the sampler, and that the picture is made of those runs.
Like tests/test_widgets.py, these must pass with ipywidgets 8 and 7.7.1.
"""

from __future__ import annotations

import pytest
import torch

from ddpm_lib import sampling
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.unet import SimpleUNet, UNetConfig
from ddpm_lib.widgets import GuidanceExplorer, GuidanceSettings

N = 10


@pytest.fixture(scope="module")
def model() -> SimpleUNet:
    torch.manual_seed(0)
    net = SimpleUNet(UNetConfig(channels=(8, 16, 16), attention=False, num_classes=10)).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # zero-initialised, it would ignore the labels entirely
    return net


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("linear", 50)


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """(labels, w, sampler, steps, seed) of every run the explorer draws from now on."""
    seen = []
    draw = sampling.sample

    def spy(model, schedule, n, sampler, steps, seed, guidance=None, **kwargs):
        seen.append((guidance.labels.tolist(), guidance.weight, sampler, steps, seed))
        return draw(model, schedule, n, sampler, steps, seed=seed, guidance=guidance, **kwargs)

    monkeypatch.setattr(sampling, "sample", spy)
    return seen


def test_first_picture_is_the_requested_run_and_its_unguided_twin(model, schedule, calls):
    explorer = GuidanceExplorer(model, schedule, n=N, guidance=2.0, steps=10, seed=3)
    balanced = [i % 10 for i in range(N)]
    assert calls == [(balanced, 2.0, "ddim", 10, 3), (balanced, 0.0, "ddim", 10, 3)]
    expected = sampling.ddim_sample(model, schedule, N, steps=10, seed=3, guidance=sampling.Guidance(torch.tensor(balanced), 2.0)).images
    torch.testing.assert_close(explorer.images, expected)
    assert bytes(explorer.image.value[:4]) == b"\x89PNG"


def test_controls_wait_for_the_sample_button(model, schedule, calls):
    explorer = GuidanceExplorer(model, schedule, n=N, steps=10)
    calls.clear()
    before = explorer.image.value
    explorer.digit.value = 7
    explorer.guidance.value = 4.0
    assert calls == []  # no sampling until the button
    assert explorer.image.value == before
    assert "press <b>Sample</b>" in explorer.caption.value

    explorer.show_requested()
    assert calls == [([7] * N, 4.0, "ddim", 10, 0), ([7] * N, 0.0, "ddim", 10, 0)]
    assert explorer.shown == GuidanceSettings(7, 4.0, "ddim", 10, 0)
    assert explorer.image.value != before
    assert "press" not in explorer.caption.value


def test_runs_are_kept_and_ddpm_takes_all_steps(model, schedule, calls):
    explorer = GuidanceExplorer(model, schedule, n=N, steps=10)
    explorer.sampler.value = "ddpm"
    assert explorer.steps.disabled
    explorer.show_requested()
    assert calls[-2][2:4] == ("ddpm", schedule.timesteps)
    explorer.sampler.value = "ddim"
    count = len(calls)
    explorer.show_requested()  # back to the first settings: kept, not drawn again
    assert len(calls) == count


def test_caption_counts_what_the_classifier_reads(model, schedule):
    class AlwaysSeven(torch.nn.Module):
        def features(self, x):
            return x.flatten(1)[:, :4]

        def head(self, f):
            return torch.nn.functional.one_hot(torch.full((len(f),), 7), 10).float() * 10

    explorer = GuidanceExplorer(model, schedule, n=N, steps=10, digit=7, classifier=AlwaysSeven())
    assert f"reads {N} of {N} as the digit asked for ({N} at w = 0)" in explorer.caption.value
    explorer.digit.value = 3
    explorer.show_requested()
    assert f"reads 0 of {N}" in explorer.caption.value


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"digit": 10}, "digit"),
        ({"guidance": -1.0}, "guidance"),
        ({"steps": 7}, "steps"),
        ({"sampler": "euler"}, "sampler"),
        ({"n": 0}, "n must"),
    ],
)
def test_nonsense_settings_are_refused(model, schedule, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidanceExplorer(model, schedule, **kwargs)


def test_an_unconditional_model_is_refused(schedule):
    with pytest.raises(ValueError, match="class-conditional"):
        GuidanceExplorer(SimpleUNet(UNetConfig(channels=(8, 16, 16))), schedule)
