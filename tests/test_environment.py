"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages with the same ranges."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11; the library itself runs on 3.10")

ROOT = Path(__file__).resolve().parent.parent
# Where conda-forge spells a package differently from PyPI.
CONDA_NAME = {"torch": "pytorch"}


def split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return dict(split(r) for r in reqs)


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_structure():
    env = environment()
    assert set(env) == {"name", "channels", "dependencies"}, "environment.yml keys: name, channels, dependencies"
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    others = [d for d in env["dependencies"] if not isinstance(d, str)]
    assert others == [{"pip": ["-e ."]}], "the only pip: entry installs this project itself"
    assert "pip" in conda, "a pip: section needs pip itself listed as a conda dependency"
    assert any(d.startswith("python") for d in conda)


def test_environment_matches_pyproject():
    conda = dict(split(d) for d in environment()["dependencies"] if isinstance(d, str))
    conda.pop("python")
    conda.pop("pip")
    wanted = {CONDA_NAME.get(name, name): spec for name, spec in pyproject_requirements().items()}
    assert conda == wanted, (
        f"environment.yml and pyproject.toml differ: only in environment.yml {set(conda.items()) - set(wanted.items())}, only in pyproject.toml {set(wanted.items()) - set(conda.items())}"
    )
