"""`python -m ddpm_lib` end to end on a tiny run, with the exact spellings outside scripts rely on."""

import os
import subprocess
import sys

import numpy as np
import pytest


def cli(*args, check=True):
    # One thread: the tiny model's tensors are too small to share, see conftest.py.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "ddpm_lib", *args], capture_output=True, text=True, timeout=300, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"ddpm_lib {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    cli("train", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--subset", "256", "--channels", "8,16,16", "--quiet")
    return out


def test_train_writes_the_run_folder(tiny_run):
    for name in ("checkpoint.pt", "ema.safetensors", "epoch_001.png", "loss_history.csv"):
        assert (tiny_run / name).exists(), name


def test_resume_extends_the_run(tiny_run):
    cli("train", "--epochs", "2", "--batch-size", "64", "--out", str(tiny_run), "--subset", "256", "--channels", "8,16,16", "--quiet", "--resume")
    assert (tiny_run / "epoch_002.png").exists()


def test_training_over_an_existing_run_needs_resume(tiny_run):
    result = cli("train", "--epochs", "1", "--out", str(tiny_run), "--subset", "256", "--channels", "8,16,16", check=False)
    assert result.returncode == 2 and "--resume" in result.stderr


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_npz(tiny_run, tmp_path, sampler):
    out = tmp_path / "digits.npz"
    cli("sample", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--n", "5", "--sampler", sampler, "--steps", "4", "--seed", "3", "--out", str(out))
    images = np.load(out)["images"]
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28)


def test_sample_png_from_exported_weights_is_deterministic(tiny_run, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, second):
        cli("sample", "--checkpoint", str(tiny_run / "ema.safetensors"), "--n", "4", "--steps", "3", "--seed", "1", "--out", str(out))
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


def test_bad_requests_fail_clearly(tiny_run, tmp_path):
    result = cli("sample", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--out", str(tmp_path / "x.jpg"), check=False)
    assert result.returncode != 0 and ".png or .npz" in result.stderr
    result = cli("sample", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.png"), check=False)
    assert result.returncode == 2 and "no checkpoint at" in result.stderr
    result = cli("train", "--epochs", "-1", "--out", str(tmp_path / "r"), check=False)
    assert result.returncode == 2 and "--epochs" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--eta", "nan", "--out", "x.png"], "--eta: must be a finite number"),
        (["sample", "--eta", "inf", "--out", "x.png"], "--eta: must be a finite number"),
        (["sample", "--conditional", "--guidance", "inf", "--out", "x.png"], "--guidance: must be a finite number"),
        (["sample", "--n", "10000000", "--out", "x.png"], "--n: must be positive and at most 1,000,000"),
        (["evaluate", "--batch-size", "1e9"], "--batch-size: expected a whole number"),
        (["train", "--epochs", "1.5", "--out", "r"], "--epochs: expected a whole number"),
    ],
)
def test_nonsense_flags_are_refused_in_one_line_naming_the_flag(args, message, capsys):
    from ddpm_lib.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_unknown_device_and_unwritable_out_fail_before_any_work(tmp_path, capsys):
    from ddpm_lib.cli import main

    assert main(["sample", "--device", "tpu", "--out", str(tmp_path / "x.png")]) == 2
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["sample", "--out", str(blocker / "x.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
