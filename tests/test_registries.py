"""One place for each idea (issue 12): a sampler or schedule registered once is offered everywhere.

The acceptance check registers a third sampler, DDIM with its noise fixed at
eta = 1, for the length of a test (the ``third_sampler`` fixture) and finds it
in ``sample``, in the command line's choices and in the sampling explorer's
menu; after the test it is gone from all three. A tiny untrained network and a
50-step schedule keep every run well under a second.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from ddpm_lib import sampling
from ddpm_lib.cli import build_parser
from ddpm_lib.evaluation import ModelReport
from ddpm_lib.metrics import Evaluation
from ddpm_lib.sampling import SAMPLER_REGISTRY, Sampler, get_sampler, register_sampler
from ddpm_lib.schedule import SCHEDULE_REGISTRY, NoiseSchedule
from ddpm_lib.widgets import ForwardNoisingExplorer, ReverseSamplingExplorer

T = 50  # the length of conftest's schedule fixture
BUILT_IN = ("ddim", "ddpm")


def ddim_with_fresh_noise(model, schedule, n, *, steps, eta, seed, clip_x0, return_trajectory, x_T, guidance):
    del eta  # fixed at 1: DDPM's step variance on DDIM's subset of timesteps
    return sampling.ddim_sample(
        model,
        schedule,
        n,
        steps=steps,
        eta=1.0,
        seed=seed,
        clip_x0=clip_x0,
        return_trajectory=return_trajectory,
        x_T=x_T,
        guidance=guidance,
    )


DDIM_ETA1 = Sampler("ddim_eta1", "DDIM (eta = 1)", run=ddim_with_fresh_noise, uses_steps=True, has_eta=False)


@contextlib.contextmanager
def registered(sampler: Sampler):
    """``sampler`` in the registry inside the block, and the registry as it was after it."""
    before = dict(SAMPLER_REGISTRY)
    register_sampler(sampler)
    try:
        yield sampler
    finally:
        del SAMPLER_REGISTRY[sampler.name]
    assert before == SAMPLER_REGISTRY


@pytest.fixture
def third_sampler() -> Sampler:
    with registered(DDIM_ETA1) as sampler:
        yield sampler


def sampler_flag(command: str, sampler: str) -> str:
    """What ``python -m ddpm_lib COMMAND --sampler SAMPLER`` parses to; argparse exits on a name it does not offer."""
    return build_parser().parse_args([command, "--sampler", sampler, *(["--out", "x.png"] if command == "sample" else [])]).sampler


# ------------------------------------------------------- a third sampler


def test_sample_runs_a_registered_sampler_by_name(third_sampler, model, schedule):
    images = sampling.sample(model, schedule, 2, third_sampler.name, steps=10, seed=3).images
    torch.testing.assert_close(images, sampling.ddim_sample(model, schedule, 2, steps=10, eta=1.0, seed=3).images)
    assert third_sampler.name in sampling.SAMPLERS


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_the_command_line_offers_a_registered_sampler(third_sampler, command, capsys):
    assert sampler_flag(command, third_sampler.name) == third_sampler.name
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert f"{third_sampler.name}: --steps steps" in help_text


def test_the_explorer_offers_a_registered_sampler_and_runs_it(third_sampler, model, schedule):
    explorer = ReverseSamplingExplorer(model, schedule, n=2, steps=10)
    assert list(explorer.sampler.options) == [*BUILT_IN, third_sampler.name]
    explorer.sampler.value = third_sampler.name
    assert not explorer.steps.disabled  # it takes the chosen number of steps
    explorer.sample_button.click()
    assert "of the run DDIM (eta = 1), 10 steps, seed 0" in explorer.caption.value
    expected = sampling.ddim_sample(model, schedule, 2, steps=10, eta=1.0, seed=0, return_trajectory=True).trajectory
    torch.testing.assert_close(explorer.trajectory.x_t, expected.x_t)


def test_removing_the_sampler_takes_it_away_everywhere(model, schedule):
    with registered(DDIM_ETA1):
        assert sampler_flag("sample", DDIM_ETA1.name) == DDIM_ETA1.name
    assert tuple(SAMPLER_REGISTRY) == sampling.SAMPLERS == BUILT_IN
    with pytest.raises(SystemExit):
        sampler_flag("sample", DDIM_ETA1.name)
    with pytest.raises(ValueError, match="sampler must be one of"):
        get_sampler(DDIM_ETA1.name)
    assert list(ReverseSamplingExplorer(model, schedule, n=2, steps=10).sampler.options) == list(BUILT_IN)


def test_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="'ddim' is already registered"):
        register_sampler(Sampler("ddim", "another DDIM", run=ddim_with_fresh_noise, uses_steps=True, has_eta=False))
    assert SAMPLER_REGISTRY["ddim"].label == "DDIM"


# --------------------------------------------------------- schedules


def test_a_registered_schedule_is_offered_by_name(monkeypatch):
    def constant_betas(timesteps: int) -> torch.Tensor:
        return torch.full((timesteps,), 0.01, dtype=torch.float64)

    monkeypatch.setitem(SCHEDULE_REGISTRY, "constant", constant_betas)
    schedule = NoiseSchedule("constant", T)
    torch.testing.assert_close(schedule.alpha_bars[-1].double(), torch.tensor(0.99**T, dtype=torch.float64), rtol=1e-6, atol=0)
    assert build_parser().parse_args(["train", "--epochs", "1", "--out", "run", "--schedule", "constant"]).schedule == "constant"
    assert "constant" in ForwardNoisingExplorer(torch.zeros(1, 1, 28, 28), timesteps=T).schedule.options


# ------------------------------------------------------ descriptions


def test_a_report_counts_the_steps_the_schedule_really_has():
    figures = Evaluation(n=10, fid=1.0, confident=0.5, class_fractions=[0.1] * 10)
    ddpm = ModelReport("ddpm", steps=50, timesteps=200, samples=figures, floor=figures, seconds=3.0)
    ddim = ModelReport("ddim", steps=50, timesteps=200, samples=figures, floor=figures, seconds=3.0)
    assert str(ddpm).startswith("samples (DDPM, 200 steps, drawn in 3 s)")
    assert str(ddim).startswith("samples (DDIM, 50 steps, drawn in 3 s)")


@pytest.mark.parametrize(
    ("name", "steps", "timesteps", "words"), [("ddpm", 50, 300, "DDPM, 300 steps"), ("ddim", 20, 300, "DDIM, 20 steps")]
)
def test_samplers_describe_their_runs_with_the_steps_they_take(name, steps, timesteps, words):
    assert get_sampler(name).describe(steps, timesteps) == words
