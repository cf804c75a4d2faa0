"""Shared fixtures: one torch thread, a tiny model configuration that trains in seconds on a CPU, the command
line run in this process; the rule that notebook and browser tests count as slow; and the checks that a refusal
is one line (``one_line``, ``refused_in_one_line``) and what a make target runs (``make_dry_run``)."""

import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ddpm_lib import REPO_ROOT
from ddpm_lib.checkpoint import save_weights
from ddpm_lib.cli import main
from ddpm_lib.config import TrainConfig
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.unet import SimpleUNet, UNetConfig

TINY_MODEL = UNetConfig(channels=(8, 16, 16), attention=False)
SAMPLER_TEST_T = 50  # a short schedule keeps full DDPM runs in the sampler and explorer tests quick


@pytest.fixture(scope="module")
def model() -> SimpleUNet:
    """An untrained tiny network, the same in every module that samples with it."""
    torch.manual_seed(0)
    return SimpleUNet(TINY_MODEL).eval()


def write_tiny_weights(path: Path) -> Path:
    """The ``model`` fixture's untrained network as a weights file, with the default config's schedule (T = 1000)."""
    torch.manual_seed(0)
    save_weights(SimpleUNet(TINY_MODEL).state_dict(), path, asdict(TrainConfig(model=TINY_MODEL)))
    return path


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule("linear", SAMPLER_TEST_T)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        settings = dict(
            epochs=1, batch_size=64, train_subset=256, model=TINY_MODEL, out_dir=str(tmp_path / "run"),
            grid_size=4, grid_steps=2, device="cpu", warmup_steps=10,
        )  # fmt: skip
        return TrainConfig(**{**settings, **overrides})

    return make


@pytest.fixture
def cli(capsys):
    """``python -m ddpm_lib ARGS`` run in this process (torch is imported once, not per command).

    Returns what a subprocess would: the exit code (argparse's own exits included), stdout and stderr.
    """

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()  # only this command's output
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["python", "-m", "ddpm_lib", *map(str, args)], code, out, err)

    return run


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Test tensors are small: extra intra-op threads only add synchronisation, and on a
    # busy machine OpenMP's spin-waiting makes small operations up to ~100x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(items):
    # A notebook or browser test is always slow: `-m "not slow"` then leaves out all three kinds.
    for item in items:
        if item.get_closest_marker("notebook") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


def make_dry_run(*args: str) -> str:
    """The commands ``make -n ARGS`` would run, as when typed in a shell: under ``make test`` the
    environment carries the outer make's settings, which would add "Entering directory" lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True).stdout


def refused_in_one_line(args: list[str], capsys) -> str:
    """The command's one line on stderr, after checking it exited with the usage code."""
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:
        code = exit_.code
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert "Traceback" not in error
    return error.splitlines()[-1]
