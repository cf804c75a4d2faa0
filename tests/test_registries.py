"""One place for each idea: a sampler or schedule registered once is offered everywhere.

The acceptance check registers a third sampler, DDIM with its noise fixed at
eta = 1 (a step function of its own, written here), and a third schedule,
constant betas, each for the length of a test, and finds them in ``sample``,
the command line (sample, evaluate, sweep), both sampling explorers, the sweep
and its curves, the curves' plot, the benchmark's sampling rows and the
notebooks' parameter specs; after the test they are gone again. The expected
lists are read from the registries as the test found them, so that adding a
built-in sampler or schedule leaves these tests alone. A tiny network and a
50-step schedule keep every run well under a second.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from types import SimpleNamespace

import matplotlib
import pytest
import torch
from conftest import TINY_MODEL

from ddpm_lib import bench, evaluation, params, sampling
from ddpm_lib.checkpoint import save_weights
from ddpm_lib.cli import build_parser
from ddpm_lib.config import TrainConfig
from ddpm_lib.evaluation import ModelReport
from ddpm_lib.metrics import Evaluation
from ddpm_lib.plots import plot_guidance_and_steps
from ddpm_lib.sampling import SAMPLER_REGISTRY, Sampler, evenly_spaced_timesteps, get_sampler, register_sampler
from ddpm_lib.schedule import SCHEDULE_REGISTRY, NoiseSchedule, register_schedule
from ddpm_lib.unet import SimpleUNet
from ddpm_lib.widgets import ForwardNoisingExplorer, GuidanceExplorer, ReverseSamplingExplorer

matplotlib.use("Agg")

T = 50  # the length of conftest's schedule fixture
CONDITIONAL = replace(TINY_MODEL, num_classes=10)


def ddim_with_fresh_noise(x_t, t, t_prev, prediction, z, schedule, settings, state):
    """DDIM's step with eta fixed at 1: DDPM's step variance on DDIM's subset of timesteps."""
    return sampling.ddim_step(x_t, t, t_prev, prediction, z, schedule, replace(settings, eta=1.0), state)


DDIM_ETA1 = Sampler(
    "ddim_eta1", "DDIM (eta = 1)", ddim_with_fresh_noise, evenly_spaced_timesteps, lambda settings: True, uses_steps=True, has_eta=False
)


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
def built_in() -> list[str]:
    """The samplers registered before the test's own."""
    return list(SAMPLER_REGISTRY)


@pytest.fixture
def third_sampler(built_in) -> Sampler:
    with registered(DDIM_ETA1) as sampler:
        yield sampler


def constant_betas(timesteps: int) -> torch.Tensor:
    return torch.full((timesteps,), 0.01, dtype=torch.float64)


@pytest.fixture
def third_schedule() -> str:
    before = dict(SCHEDULE_REGISTRY)
    register_schedule("constant", constant_betas, "constant betas")
    yield "constant"
    del SCHEDULE_REGISTRY["constant"]
    assert before == SCHEDULE_REGISTRY


@pytest.fixture(scope="module")
def conditional_model() -> SimpleUNet:
    torch.manual_seed(0)
    model = SimpleUNet(CONDITIONAL).eval()
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


def sampler_flag(command: str, sampler: str) -> str:
    """What ``python -m ddpm_lib COMMAND --sampler SAMPLER`` parses to; argparse exits on a name it does not offer."""
    return build_parser().parse_args([command, "--sampler", sampler, *(["--out", "x.png"] if command == "sample" else [])]).sampler


@pytest.fixture
def scripted_measurements(monkeypatch) -> list[tuple]:
    """``evaluation.measure`` replaced by a script that records (sampler, steps, w) and scores by the order drawn."""
    drawn = []

    def fake_measure(model, schedule, classifier, reference, n, sampler, steps, seed, eta, batch_size, w):
        drawn.append((sampler, steps, w))
        return SimpleNamespace(fid=float(len(drawn)), confident=0.9, requested_accuracy=[0.8, 1.0]), 1.0

    monkeypatch.setattr(evaluation, "reference_and_floor", lambda n: (None, None, SimpleNamespace(fid=0.5)))
    monkeypatch.setattr(evaluation, "measure", fake_measure)
    return drawn


# ------------------------------------------------------- a third sampler


def test_sample_runs_a_registered_sampler_by_name(third_sampler, model, schedule):
    images = sampling.sample(model, schedule, 2, third_sampler.name, steps=10, seed=3).images
    assert torch.equal(images, sampling.ddim_sample(model, schedule, 2, steps=10, eta=1.0, seed=3).images)


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_the_command_line_offers_a_registered_sampler(third_sampler, command, capsys):
    assert sampler_flag(command, third_sampler.name) == third_sampler.name
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert f"{third_sampler.name}: --steps steps" in help_text


def test_the_sweep_offers_a_registered_sampler_for_both_curves(third_sampler, capsys):
    args = build_parser().parse_args(
        ["sweep", "--samplers", f"ddpm,{third_sampler.name}", "--guidance-sampler", third_sampler.name, "--out", "x.csv"]
    )
    assert (args.samplers, args.guidance_sampler) == (["ddpm", third_sampler.name], third_sampler.name)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    assert third_sampler.name in " ".join(capsys.readouterr().out.split())


def test_the_sweep_draws_every_registered_sampler_by_default(third_sampler, built_in, scripted_measurements, tmp_path, cli):
    weights = tmp_path / "conditional.safetensors"
    torch.manual_seed(0)
    save_weights(SimpleUNet(CONDITIONAL).state_dict(), weights, asdict(TrainConfig(model=CONDITIONAL, timesteps=T)))
    out = tmp_path / "curves.csv"
    result = cli("sweep", "--checkpoint", weights, "--n", "500", "--guidance", "0,2", "--guidance-steps", "3", "--steps", "2,4",
                 "--device", "cpu", "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    on_the_steps_curve = [row["sampler"] for row in evaluation.read_curves(out) if row["curve"] == "steps"]
    expected = [name for name in [*built_in, third_sampler.name] for _ in range(2 if get_sampler(name).uses_steps else 1)]  # --steps 2,4
    assert on_the_steps_curve == expected


def test_the_curves_offer_a_registered_sampler(third_sampler, built_in, scripted_measurements):
    rows = evaluation.guidance_and_steps_curves(None, NoiseSchedule("linear", T), 500, [0.0, 2.0], [5, 10], steps_for_guidance=5,
                                                guidance_for_steps=2.0, guidance_sampler=third_sampler.name)  # fmt: skip
    assert [(r["curve"], r["sampler"]) for r in rows[:2]] == [("guidance", third_sampler.name)] * 2
    assert {r["sampler"] for r in rows if r["curve"] == "steps"} == {*built_in, third_sampler.name}
    assert [(r["sampler"], r["steps"]) for r in rows[-2:]] == [(third_sampler.name, 5), (third_sampler.name, 10)]


def test_the_curves_plot_names_a_registered_sampler(third_sampler):
    rows = [
        {"curve": "guidance", "sampler": "ddim", "steps": 20, "guidance": 1.0, "n": 500, "fid": 2.0, "floor_fid": 0.5,
         "confident": 0.9, "worst_digit_accuracy": 0.8, "mean_digit_accuracy": 0.9, "seconds": 10.0},
    ]  # fmt: skip
    rows += [{**rows[0], "curve": "steps", "sampler": name, "steps": steps} for name in ("ddim", third_sampler.name) for steps in (10, 20)]
    figure = plot_guidance_and_steps({"run": rows})
    fid_steps_ax = figure.axes[2]
    labels = [line.get_label() for line in fid_steps_ax.get_lines()]
    assert f"run: {third_sampler.label}, w = 1" in labels
    assert third_sampler.label in fid_steps_ax.get_xlabel() and get_sampler("ddim").label in fid_steps_ax.get_xlabel()
    by_label = {line.get_label(): line for line in fid_steps_ax.get_lines()}
    assert by_label[f"run: {third_sampler.label}, w = 1"].get_linestyle() != by_label["run: DDIM, w = 1"].get_linestyle()


def test_the_benchmark_times_a_registered_sampler(third_sampler, built_in, monkeypatch):
    timed = []
    monkeypatch.setattr(bench, "sampling_seconds", lambda device, sampler, steps, precision: timed.append((sampler, steps)) or 1.0)
    rows = bench.sampling_rows(torch.device("cpu"), "fp32")
    assert [sampler for sampler, _ in timed] == [*built_in, third_sampler.name]
    assert rows[-1] == ("sample 64 digits, DDIM (eta = 1) 50 steps", "1.00 s")


def test_the_reverse_explorer_offers_a_registered_sampler_and_runs_it(third_sampler, built_in, model, schedule):
    explorer = ReverseSamplingExplorer(model, schedule, n=2, steps=10)
    assert list(explorer.sampler.options) == [*built_in, third_sampler.name]
    explorer.sampler.value = third_sampler.name
    assert not explorer.steps.disabled  # it takes the chosen number of steps
    explorer.sample_button.click()
    assert "of the run DDIM (eta = 1), 10 steps, seed 0" in explorer.caption.value
    expected = sampling.ddim_sample(model, schedule, 2, steps=10, eta=1.0, seed=0, return_trajectory=True).trajectory
    assert torch.equal(explorer.trajectory.x_t, expected.x_t)


def test_the_guidance_explorer_offers_a_registered_sampler_and_runs_it(third_sampler, built_in, conditional_model, schedule):
    explorer = GuidanceExplorer(conditional_model, schedule, n=10, guidance=2.0, steps=10)
    assert list(explorer.sampler.options) == [*built_in, third_sampler.name]
    explorer.sampler.value = third_sampler.name
    explorer.sample_button.click()
    assert "DDIM (eta = 1), 10 steps" in explorer.caption.value
    guidance = sampling.Guidance(sampling.balanced_labels(10), 2.0)
    expected = sampling.ddim_sample(conditional_model, schedule, 10, steps=10, eta=1.0, seed=0, guidance=guidance).images
    assert torch.equal(explorer.images, expected)


def test_removing_the_sampler_takes_it_away_everywhere(built_in, model, schedule):
    with registered(DDIM_ETA1):
        assert sampler_flag("sample", DDIM_ETA1.name) == DDIM_ETA1.name
    assert list(SAMPLER_REGISTRY) == built_in
    with pytest.raises(SystemExit):
        sampler_flag("sample", DDIM_ETA1.name)
    with pytest.raises(ValueError, match="sampler must be one of"):
        get_sampler(DDIM_ETA1.name)
    assert list(ReverseSamplingExplorer(model, schedule, n=2, steps=10).sampler.options) == built_in


def test_a_taken_sampler_name_is_refused():
    with pytest.raises(ValueError, match="'ddim' is already registered"):
        register_sampler(replace(DDIM_ETA1, name="ddim", label="another DDIM"))
    assert SAMPLER_REGISTRY["ddim"].label == "DDIM"


# --------------------------------------------------------- schedules


def test_a_registered_schedule_is_offered_by_name(third_schedule):
    schedule = NoiseSchedule(third_schedule, T)
    torch.testing.assert_close(schedule.alpha_bars[-1].double(), torch.tensor(0.99**T, dtype=torch.float64), rtol=1e-6, atol=0)
    assert build_parser().parse_args(["train", "--epochs", "1", "--out", "run", "--schedule", third_schedule]).schedule == third_schedule
    explorer = ForwardNoisingExplorer(torch.zeros(1, 1, 28, 28), timesteps=T)
    assert third_schedule in explorer.schedule.options
    explorer.schedule.value = third_schedule
    assert "constant betas schedule" in explorer.caption.value  # the caption writes the schedule's label


def test_the_notebook_parameters_offer_a_registered_schedule(third_schedule):
    spec = {"schedule": params.TRAINING_NOTEBOOK["schedule"]}  # written when ddpm_lib.params was imported, before the test
    assert params.validate({"schedule": third_schedule}, spec) == {"schedule": third_schedule}
    with pytest.raises(params.NotebookParameterError, match="'constant'"):
        params.validate({"schedule": "quadratic"}, spec)


def test_a_taken_schedule_name_is_refused():
    with pytest.raises(ValueError, match="'cosine' is already registered"):
        register_schedule("cosine", constant_betas, "another cosine")
    assert SCHEDULE_REGISTRY["cosine"].betas is not constant_betas


# ------------------------------------------------------ descriptions


def test_a_report_counts_the_steps_the_schedule_really_has():
    figures = Evaluation(n=10, fid=1.0, confident=0.5, class_fractions=[0.1] * 10)
    ddpm = ModelReport("ddpm", steps=50, timesteps=200, samples=figures, floor=figures, seconds=3.0)
    ddim = ModelReport("ddim", steps=50, timesteps=200, samples=figures, floor=figures, seconds=3.0)
    assert str(ddpm).startswith("samples (DDPM, 200 steps, drawn in 3 s)")
    assert str(ddim).startswith("samples (DDIM, 50 steps, drawn in 3 s)")


@pytest.mark.parametrize(
    ("name", "steps", "timesteps", "words"),
    [("ddpm", 50, 300, "DDPM, 300 steps"), ("ddim", 20, 300, "DDIM, 20 steps"), ("dpm_solver", 15, 300, "DPM-Solver++ (2M), 15 steps")],
)
def test_samplers_describe_their_runs_with_the_steps_they_take(name, steps, timesteps, words):
    assert get_sampler(name).describe(steps, timesteps) == words
