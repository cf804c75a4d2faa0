"""The command line on a tiny model, with the exact spellings outside scripts rely on.

Every command runs in this process through ``cli.main`` (the ``cli`` fixture of conftest.py);
one test runs ``python -m ddpm_lib`` as a real subprocess, to check the entry point itself.
Sampling reads an untrained tiny network's weights; the tests that train are marked slow.
"""

import contextlib
import csv
import dataclasses
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import refused_in_one_line, write_tiny_weights

from ddpm_lib import cli as cli_module
from ddpm_lib import evaluation, sampling, trainer
from ddpm_lib.cli import COMMANDS, RELIABLE_FID_DIGITS, build_parser, main
from ddpm_lib.config import TrainConfig
from ddpm_lib.unet import UNetConfig

TINY = ["--subset", "256", "--batch-size", "64", "--channels", "8,16,16", "--quiet"]  # the flags of conftest's TINY_MODEL


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("cli") / "tiny.safetensors")


# ------------------------------------------------------------------ train


@pytest.mark.slow
def test_train_writes_the_run_folder(tiny_run):
    for name in ("checkpoint.pt", "ema.safetensors", "epoch_001.png", "loss_history.csv"):
        assert (tiny_run / name).exists(), name


@pytest.mark.slow
def test_resume_extends_the_run(tiny_run, tmp_path, cli):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays as trained
    result = cli("train", "--epochs", "2", "--out", run, *TINY, "--resume")
    assert result.returncode == 0, result.stderr
    assert (run / "epoch_002.png").exists() and "trained 2 epochs" in result.stdout


@pytest.mark.slow
def test_training_over_an_existing_run_needs_resume(tiny_run, cli):
    result = cli("train", "--epochs", "1", "--out", tiny_run, *TINY)
    assert result.returncode == 2 and "--resume" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ema-decay", "2"], "--ema-decay must be in [0, 1), got 2.0"),
        (["--subset", "100", "--batch-size", "128"], "--batch-size (128) must not exceed the number of training digits (100)"),
        (["--channels", "8,16,17"], "--channels: every width in (8, 16, 17) must be a positive multiple of groups=8"),
        (["--channels", "8,x,16"], "--channels: expected three whole numbers"),
        (["--amp", "fp16", "--device", "cpu"], "--amp: amp='fp16' needs a CUDA GPU"),
        (["--p-uncond", "0.2"], "--p-uncond only applies with --conditional"),
    ],
)
def test_refused_training_settings_name_the_flag_and_write_nothing(flags, message, tmp_path, cli):
    result = cli("train", "--epochs", "1", "--out", tmp_path / "run", *flags)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run").exists()


# Every setting of TrainConfig, set from the command line: the flags outside scripts type, a value other than the
# default, and the value TrainConfig must then hold. --out is given in every call.
FLAG_OF_EVERY_SETTING = [
    ("epochs", ["--epochs", "2"], 2),
    ("batch_size", ["--batch-size", "32"], 32),
    ("lr", ["--lr", "1e-3"], 1e-3),
    ("warmup_steps", ["--warmup-steps", "7"], 7),
    ("lr_schedule", ["--lr-schedule", "cosine"], "cosine"),
    ("grad_clip", ["--grad-clip", "0.5"], 0.5),
    ("ema_decay", ["--ema-decay", "0.99"], 0.99),
    ("ema_warmup", ["--ema-warmup", "3"], 3),
    ("schedule", ["--schedule", "linear"], "linear"),
    ("timesteps", ["--timesteps", "500"], 500),
    ("prediction", ["--prediction", "eps"], "eps"),
    ("loss_weighting", ["--loss-weighting", "uniform"], "uniform"),
    ("min_snr_gamma", ["--min-snr-gamma", "2.5"], 2.5),
    ("model", ["--channels", "8,16,16", "--no-attention", "--conditional"], UNetConfig((8, 16, 16), attention=False, num_classes=10)),
    ("p_uncond", ["--conditional", "--p-uncond", "0.2"], 0.2),
    ("train_subset", ["--subset", "256"], 256),
    ("device", ["--device", "cpu"], "cpu"),
    ("amp", ["--amp", "fp32"], "fp32"),
    ("cuda_graphs", ["--no-cuda-graphs"], False),
    ("cpu_threads", ["--cpu-threads", "2"], 2),
    ("cpu_threads", ["--cpu-threads", "adaptive"], "adaptive"),
    ("seed", ["--seed", "3"], 3),
    ("out_dir", [], None),  # the run folder of each call below
    ("data_root", ["--data-root", "elsewhere"], "elsewhere"),
    ("grid_size", ["--grid-size", "16"], 16),
    ("grid_steps", ["--grid-steps", "10"], 10),
]


def test_every_training_setting_is_in_the_table_of_flags():
    assert {name for name, _, _ in FLAG_OF_EVERY_SETTING} == {setting.name for setting in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize(
    "name, flags, expected", FLAG_OF_EVERY_SETTING, ids=[" ".join(flags) or name for name, flags, _ in FLAG_OF_EVERY_SETTING]
)
def test_every_training_setting_has_its_flag(name, flags, expected, tmp_path, monkeypatch, cli):
    given = []

    def capture(config, **options):
        given.append(config)
        raise KeyboardInterrupt  # stops before any training

    monkeypatch.setattr(trainer, "train", capture)
    result = cli("train", "--epochs", "1", "--out", tmp_path / "run", *flags)
    assert result.returncode == 130, result.stderr
    expected = str(tmp_path / "run") if name == "out_dir" else expected
    assert getattr(given[0], name) == expected != getattr(TrainConfig(), name)


# ----------------------------------------------------------------- sample


@pytest.mark.parametrize("sampler", [pytest.param("ddpm", marks=pytest.mark.slow), "ddim"])  # DDPM takes all 1000 steps
def test_sample_npz(weights, tmp_path, sampler, cli):
    out = tmp_path / "digits.npz"
    result = cli("sample", "--checkpoint", weights, "--n", "5", "--sampler", sampler, "--steps", "4", "--seed", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    images = np.load(out)["images"]
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28)


@pytest.mark.slow
def test_sample_from_the_checkpoint_a_run_wrote(tiny_run, tmp_path, cli):
    out = tmp_path / "digits.npz"
    result = cli("sample", "--checkpoint", tiny_run / "checkpoint.pt", "--n", "2", "--steps", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert np.load(out)["images"].shape == (2, 28, 28)


def test_sample_png_is_deterministic(weights, tmp_path, cli):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, second):
        assert cli("sample", "--checkpoint", weights, "--n", "4", "--steps", "3", "--seed", "1", "--out", out).returncode == 0
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("suffix", [".png", ".npz"])
def test_sample_on_a_full_disk_is_one_line_and_leaves_no_file(weights, tmp_path, monkeypatch, suffix, cli):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("PIL.Image.Image.save", no_space)
    monkeypatch.setattr(np, "savez_compressed", no_space)
    out = tmp_path / f"digits{suffix}"
    result = cli("sample", "--checkpoint", weights, "--n", "2", "--steps", "2", "--out", out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "while writing" in result.stderr and "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_sample_draws_in_the_precision_evaluate_uses(weights, tmp_path, monkeypatch, cli):
    """On a GPU, "auto" means bf16 or fp16 for the network: sample must use it as evaluate does, or one seed gives two sets of digits."""
    entered = []
    monkeypatch.setattr(cli_module, "resolve_precision", lambda amp, device: "bf16" if amp == "auto" else amp)
    monkeypatch.setattr(
        cli_module, "autocast", lambda device, precision: entered.append((device.type, precision)) or contextlib.nullcontext()
    )
    assert cli("sample", "--checkpoint", weights, "--n", "2", "--steps", "2", "--out", tmp_path / "x.npz").returncode == 0
    assert entered == [("cpu", "bf16")]


def test_bad_requests_fail_clearly(weights, tmp_path, cli):
    result = cli("sample", "--checkpoint", weights, "--out", tmp_path / "x.jpg")
    assert result.returncode == 2 and "--out: must end in .png or .npz" in result.stderr
    result = cli("sample", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "x.png")
    assert result.returncode == 2 and "no checkpoint at" in result.stderr
    result = cli("sample", "--checkpoint", weights, "--steps", "1001", "--out", tmp_path / "x.png")
    assert result.returncode == 2 and "--steps 1001 is more than the model's 1000 timesteps" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--eta", "nan", "--out", "x.png"], "--eta: must be a finite number"),
        (["sample", "--eta", "inf", "--out", "x.png"], "--eta: must be a finite number"),
        (["sample", "--conditional", "--guidance", "inf", "--out", "x.png"], "--guidance: must be a finite number"),
        (["sample", "--n", "10000000", "--out", "x.png"], "--n: must be positive and at most 1,000,000"),
        (["sample", "--device", "tpu", "--out", "x.png"], "--device: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (["evaluate", "--batch-size", "1e9"], "--batch-size: expected a whole number"),
        (["train", "--epochs", "1.5", "--out", "r"], "--epochs: expected a whole number"),
        (["train", "--epochs", "-1", "--out", "r"], "--epochs must be a whole number, at least 1, got -1"),
        (["train", "--epochs", "1", "--out", "r", "--lr", "inf"], "--lr must be a positive number, got inf"),
        (["train", "--epochs", "1", "--out", "r", "--grad-clip", "inf"], "--grad-clip must be a positive number, got inf"),
        (["train", "--epochs", "1", "--out", "r", "--min-snr-gamma", "nan"], "--min-snr-gamma must be a positive number, got nan"),
        (["sweep", "--steps", "10,0", "--out", "c.csv"], "--steps: '0' in '10,0': must be positive"),
        (["sweep", "--guidance", "1,-2", "--out", "c.csv"], "--guidance: '-2' in '1,-2': must be a finite number, 0 or more"),
        (["sweep", "--out", "curves.txt"], "--out: must end in .csv"),
        (["train-classifier", "--out", "classifier.pt"], "--out: must end in .safetensors"),
    ],
)
def test_nonsense_flags_are_refused_in_one_line_naming_the_flag(args, message, cli):
    result = cli(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_unwritable_out_fails_before_any_work(tmp_path, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = cli("sample", "--out", blocker / "x.png")
    assert result.returncode == 2 and "cannot write" in result.stderr


# ------------------------------------------------------- evaluate and sweep


@pytest.mark.parametrize("n, warned", [(RELIABLE_FID_DIGITS - 1, True), (RELIABLE_FID_DIGITS, False)])
def test_evaluate_warns_once_below_a_reliable_number_of_digits(weights, n, warned, monkeypatch, cli):
    monkeypatch.setattr(evaluation, "evaluate_model", lambda model, schedule, n, *rest: f"report on {n} digits")
    result = cli("evaluate", "--checkpoint", weights, "--n", n)
    assert result.returncode == 0 and result.stdout == f"report on {n} digits\n"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == (
        [f"warning: --n {n} is below {RELIABLE_FID_DIGITS} digits, where the classifier-FID is too noisy to compare runs"] if warned else []
    )


@pytest.fixture
def no_curves(monkeypatch):
    """Makes drawing a curve a test failure: the sweep must stop before it."""

    def fail(*args, **kwargs):
        raise AssertionError("a curve was drawn")

    monkeypatch.setattr(evaluation, "guidance_and_steps_curves", fail)


def test_sweep_checks_every_step_count_against_the_model_before_the_first_curve(no_curves, tmp_path, cli):
    out = tmp_path / "curves.csv"
    result = cli("sweep", "--n", "500", "--guidance", "0,2", "--steps", "10,1001", "--device", "cpu", "--out", out)
    assert result.returncode == 2 and "--steps 1001 is more than the model's 1000 timesteps" in result.stderr
    result = cli("sweep", "--n", "500", "--guidance-steps", "2000", "--device", "cpu", "--out", out)
    assert result.returncode == 2 and "--guidance-steps 2000 is more than" in result.stderr
    assert not out.exists()


def test_sweep_of_an_unconditional_model_names_the_flag_to_train_one(weights, no_curves, tmp_path, cli):
    result = cli("sweep", "--checkpoint", weights, "--n", "500", "--out", tmp_path / "curves.csv")
    assert result.returncode == 2 and "train --conditional" in result.stderr
    assert "drop --conditional" not in result.stderr  # sweep has no such flag


# ------------------------------------------------------ what is an error


@pytest.mark.parametrize("bug", [ValueError, FileNotFoundError, FileExistsError])
def test_a_bug_shows_its_traceback(bug, weights, tmp_path, monkeypatch):
    # A missing file the user did not name is a bug too: only the run folder and the files a flag names are the user's to fix.
    def buggy(*args, **kwargs):
        raise bug("an internal bug")

    monkeypatch.setattr(sampling, "sample_many", buggy)
    with pytest.raises(bug, match="an internal bug"):
        main(["sample", "--checkpoint", str(weights), "--out", str(tmp_path / "x.png")])


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_train_says_how_to_resume(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(trainer, "train", interrupt)
    result = cli("train", "--epochs", "1", "--out", tmp_path / "run", *TINY)
    assert result.returncode == 130 and result.stderr.strip().endswith("continue with --resume")


def test_ctrl_c_elsewhere_says_only_interrupted(weights, tmp_path, monkeypatch, cli):
    monkeypatch.setattr(sampling, "sample_many", interrupt)
    result = cli("sample", "--checkpoint", weights, "--out", tmp_path / "x.png")
    assert result.returncode == 130 and result.stderr.strip() == "interrupted"


# ------------------------------------------------------- the command table


def test_parser_help_and_docstring_list_every_command_of_the_table(capsys):
    names = ["train", "sample", "evaluate", "sweep", "train-classifier", "bench"]  # the public spellings
    assert list(COMMANDS) == names
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    for command in COMMANDS.values():
        assert command.summary in help_text
        assert f"{command.name:<18}{command.summary}" in cli_module.__doc__


@pytest.mark.slow  # a second Python that imports torch: about 3 s of CPU
def test_help_works_without_docstrings():
    """``python -OO`` drops every docstring; the command line must not need its own."""
    result = subprocess.run([sys.executable, "-OO", "-m", "ddpm_lib", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert all(command.summary in " ".join(result.stdout.split()) for command in COMMANDS.values())


@pytest.mark.slow  # a second Python that imports torch
def test_python_dash_m_runs_the_same_command_line(weights, tmp_path, cli):
    """The one real subprocess: ``python -m ddpm_lib`` must draw what ``main`` draws in this process."""
    args = ["sample", "--checkpoint", str(weights), "--n", "3", "--steps", "2", "--seed", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as in this process (conftest.py)
    outside = subprocess.run([sys.executable, "-m", "ddpm_lib", *args, "--out", str(tmp_path / "outside.npz")],
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert outside.returncode == 0, outside.stderr
    assert cli(*args, "--out", tmp_path / "inside.npz").returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "outside.npz")["images"], np.load(tmp_path / "inside.npz")["images"])
    assert outside.stdout.replace("outside", "inside") == f"wrote 3 digits (DDIM, 2 steps) to {tmp_path / 'inside.npz'}\n"


# numbers the parser took and the code could not use, and the sweep's table -------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Make each command's work a test failure: a refusal must come before it."""

    def fail(*args, **kwargs):
        pytest.fail("the command started its work")

    for work in ("ddpm_lib.sampling.sample_many", "ddpm_lib.evaluation.evaluate_model", "ddpm_lib.evaluation.guidance_and_steps_curves",
                 "ddpm_lib.cli.train_classifier", "ddpm_lib.trainer.train"):  # fmt: skip
        monkeypatch.setattr(work, fail)


@pytest.mark.parametrize("seed", [str(2**64), "-1"])
@pytest.mark.parametrize("command", ["sample", "train", "evaluate", "train-classifier", "sweep"])
def test_a_seed_torch_cannot_take_is_refused_naming_the_flag(tmp_path, capsys, weights, no_work, command, seed):
    out = {"sample": ["--out", tmp_path / "d.png"], "train": ["--epochs", 1, "--out", tmp_path / "run", "--subset", 256],
           "train-classifier": ["--epochs", 1, "--out", tmp_path / "c.safetensors"], "sweep": ["--out", tmp_path / "c.csv"]}  # fmt: skip
    model = ["--checkpoint", weights, "--n", 2] if command in ("sample", "evaluate") else []
    error = refused_in_one_line([command, *model, *out.get(command, []), "--seed", seed], capsys)
    assert error.endswith(f"--seed: must be a whole number from 0 to 4,294,967,295, got {seed}")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_of_one_digit_is_refused_before_sampling(weights, capsys, monkeypatch):
    monkeypatch.setattr("ddpm_lib.evaluation.evaluate_model", lambda *args, **kwargs: pytest.fail("sampled and scored one digit"))
    error = refused_in_one_line(["evaluate", "--checkpoint", weights, "--n", 1], capsys)
    assert error.endswith("--n must be at least 2 here: the classifier-FID fits a covariance to the digits' features")


@pytest.mark.parametrize("flag", ["--seconds", "--quality-minutes"])
def test_bench_for_ever_is_refused(capsys, monkeypatch, flag):
    monkeypatch.setattr("ddpm_lib.bench.run_bench", lambda *args, **kwargs: pytest.fail("a benchmark without end was started"))
    assert refused_in_one_line(["bench", "--quality", flag, "inf"], capsys).endswith(f"{flag}: must be positive, got inf")


def test_train_without_a_run_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = refused_in_one_line(["train", "--epochs", 1, "--subset", 256, "--batch-size", 64, "--quiet", "--out", ""], capsys)
    assert error.endswith("--out: must name the run folder, got ''")
    assert list(tmp_path.iterdir()) == [], "something was written in the working folder"


def sweep_with_points(tmp_path, monkeypatch, capsys, points: int) -> Path:
    """Run sweep into an existing table, interrupted (Ctrl-C) after ``points`` new points."""
    out = tmp_path / "curves.csv"
    out.write_text("curve,sampler\nguidance,ddim\nsteps,ddim\n")

    def interrupted_after(model, schedule, n, *args, log, **kwargs):
        for k in range(points):
            log({"curve": "guidance", "sampler": "ddim", "steps": 20, "guidance": float(k), "fid": 1.0, "floor_fid": 0.5,
                 "worst_digit_accuracy": 0.9, "seconds": 1.0})  # fmt: skip
        raise KeyboardInterrupt

    monkeypatch.setattr("ddpm_lib.evaluation.guidance_and_steps_curves", interrupted_after)
    monkeypatch.setattr("ddpm_lib.cli.load_model", lambda *args, **kwargs: (None, type("Schedule", (), {"timesteps": 1000})(), None))
    assert main(["sweep", "--n", "500", "--out", str(out)]) == 130
    capsys.readouterr()
    return out


def test_a_sweep_interrupted_before_its_first_point_keeps_the_old_table(tmp_path, monkeypatch, capsys):
    out = sweep_with_points(tmp_path, monkeypatch, capsys, points=0)
    assert out.read_text() == "curve,sampler\nguidance,ddim\nsteps,ddim\n"


def test_a_sweep_interrupted_later_keeps_the_points_it_measured(tmp_path, monkeypatch, capsys):
    from ddpm_lib.evaluation import CURVE_COLUMNS

    out = sweep_with_points(tmp_path, monkeypatch, capsys, points=2)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CURVE_COLUMNS) and [row["guidance"] for row in rows] == ["0.0", "1.0"]
    assert [p.name for p in tmp_path.iterdir()] == ["curves.csv"]
