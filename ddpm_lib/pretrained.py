"""The weights this repository ships in ``assets/``, verified by sha256 before use.

``assets/manifest.json`` lists each shipped file with its sha256; the config it
was trained with is in the file's safetensors metadata, and the model cards beside
it say how it was trained.

In a clone (and an editable install) they are read from the repository's
``assets/``; a wheel (``pip install .`` or ``pip install git+URL``) carries the
same files as ``ddpm_lib/assets/`` (pyproject.toml, ``package-dir``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import file_digest

_PACKAGE = Path(__file__).resolve().parent
ASSETS = _PACKAGE / "assets" if (_PACKAGE / "assets").is_dir() else _PACKAGE.parent / "assets"
MANIFEST = ASSETS / "manifest.json"


class ShippedWeightsError(RuntimeError):
    """Shipped weights missing, or not the bytes the manifest promises."""


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def manifest() -> dict:
    """name -> {"file", "sha256"} of every shipped file; {} where none are installed. A damaged manifest is one line naming it."""
    if not MANIFEST.exists():
        return {}
    try:
        entries = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        problem = f"cannot be read as JSON ({type(exc).__name__}: {exc})"
    else:
        fine = isinstance(entries, dict) and all(
            isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
            for entry in entries.values()
        )
        problem = None if fine else 'is not a table of {"file": ..., "sha256": ...} entries'
    if problem:
        raise ShippedWeightsError(f"{MANIFEST} {problem}: it is damaged. Restore it with `git checkout -- {_in_repository(MANIFEST)}`.")
    return entries


def _in_repository(path: Path) -> Path:
    """``path`` as ``git checkout`` takes it in a clone."""
    return path.relative_to(ASSETS.parent) if path.is_relative_to(ASSETS.parent) else path


def shipped_path(name: str) -> Path:
    """Path of shipped file ``name`` after checking its sha256 against the manifest."""
    if not MANIFEST.is_file():
        raise ShippedWeightsError(
            f"the shipped weights are not installed ({MANIFEST} is missing): install ddpm_lib from a clone of the "
            f"repository (pip install -e .), or pass a checkpoint you trained (python -m ddpm_lib train ...)."
        )
    entry = manifest().get(name)
    if entry is None:
        raise ShippedWeightsError(
            f"no shipped weights named {name!r} in {MANIFEST}. Train your own "
            f"(python -m ddpm_lib train ...) and pass its checkpoint instead."
        )
    path = ASSETS / entry["file"]
    if not path.is_file():
        raise ShippedWeightsError(
            f"{path} is {'not a file' if path.exists() else 'missing'}. If you cloned with git-lfs or a sparse checkout, fetch the full repository."
        )
    if (actual := sha256_of(path)) != entry["sha256"]:
        raise ShippedWeightsError(
            f"{path} has sha256 {actual}, but the manifest expects {entry['sha256']}: the file is damaged or was "
            f"replaced. Restore it with `git checkout -- {_in_repository(path)}`."
        )
    return path
