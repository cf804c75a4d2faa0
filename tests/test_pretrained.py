"""Shipped weights: found in a clone, carried by a wheel, and a one-line fix named where they are absent."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import refused_in_one_line

from ddpm_lib import REPO_ROOT, pretrained
from ddpm_lib.pretrained import ShippedWeightsError, shipped_path


def test_absent_weights_name_the_fix(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(ShippedWeightsError, match=r"pip install -e \.\), or pass a checkpoint you trained"):
        shipped_path("unconditional")
    result = cli("sample", "--n", "2", "--out", tmp_path / "x.png")  # no --checkpoint: the shipped weights
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "pip install -e ." in result.stderr


def test_a_damaged_file_is_refused_naming_how_to_restore_it(tmp_path, monkeypatch):
    shutil.copy(pretrained.MANIFEST, tmp_path / "manifest.json")
    entry = json.loads((tmp_path / "manifest.json").read_text())["classifier"]
    (tmp_path / entry["file"]).write_bytes(b"not the shipped bytes")
    monkeypatch.setattr(pretrained, "ASSETS", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(ShippedWeightsError, match="the manifest expects"):
        shipped_path("classifier")


@pytest.mark.slow
def test_a_wheel_carries_the_weights_and_finds_them_without_the_repository(tmp_path):
    """``pip install .`` (not editable): the installed package alone must find and verify every shipped file."""
    source = tmp_path / "source"  # a copy, so that building leaves nothing in the repository
    shutil.copytree(REPO_ROOT / "ddpm_lib", source / "ddpm_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "assets", source / "assets")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []  # else pip fetches setuptools to build
    subprocess.run([*pip, "wheel", "--no-deps", *offline, "-w", tmp_path / "wheel", source], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    shipped = json.loads((REPO_ROOT / "assets" / "manifest.json").read_text())
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ddpm_lib/assets/manifest.json", *(f"ddpm_lib/assets/{entry['file']}" for entry in shipped.values())} <= names

    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True, capture_output=True)
    check = "from ddpm_lib.pretrained import shipped_path; print('\\n'.join(str(shipped_path(name)) for name in NAMES))"
    found = subprocess.run(
        [sys.executable, "-c", check.replace("NAMES", repr(sorted(shipped)))], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(tmp_path / "site" / "ddpm_lib" / "assets" / shipped[name]["file"]) for name in sorted(shipped)]


# a damaged manifest --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest_text", ["{not json", '{"conditional": "weights.safetensors"}', "[]"])
def test_a_damaged_manifest_is_one_line_naming_it(tmp_path, monkeypatch, capsys, manifest_text):
    from ddpm_lib import pretrained

    (tmp_path / "manifest.json").write_text(manifest_text)
    monkeypatch.setattr(pretrained, "ASSETS", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    error = refused_in_one_line(["sample", "--n", 2, "--out", tmp_path / "d.png"], capsys)
    assert error.startswith(f"error: {tmp_path / 'manifest.json'} ") and "it is damaged" in error
