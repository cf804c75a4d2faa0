"""The weights this repository ships in ``assets/``, verified by sha256 before use.

``assets/manifest.json`` lists each shipped file with its hash and the config
it was trained with; the model cards beside it say how it was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import file_digest

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MANIFEST = ASSETS / "manifest.json"


class ShippedWeightsError(RuntimeError):
    """Shipped weights missing, or not the bytes the manifest promises."""


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def shipped_path(name: str) -> Path:
    """Path of shipped file ``name`` after checking its sha256 against the manifest."""
    entry = manifest().get(name)
    if entry is None:
        raise ShippedWeightsError(
            f"no shipped weights named {name!r} in {MANIFEST}. Train your own "
            f"(python -m ddpm_lib train ...) and pass its checkpoint instead."
        )
    path = ASSETS / entry["file"]
    if not path.exists():
        raise ShippedWeightsError(f"{path} is missing. If you cloned with git-lfs or a sparse checkout, fetch the full repository.")
    if (actual := sha256_of(path)) != entry["sha256"]:
        raise ShippedWeightsError(
            f"{path} has sha256 {actual}, but the manifest expects {entry['sha256']}: the file is damaged or was "
            f"replaced. Restore it with `git checkout -- {path.relative_to(ASSETS.parent)}`."
        )
    return path


def save_weights(state_dict: dict, path: Path, config: dict) -> str:
    """Write weights as safetensors with the config in its metadata; return the sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    return sha256_of(path)


def ship(name: str, weights: Path) -> dict:
    """Copy ``weights`` to assets/ as ``ddpm_mnist_{name}.safetensors`` and record it in the manifest."""
    import shutil

    read_weights(weights)  # refuse anything that is not a weights file of ours
    target = ASSETS / f"ddpm_mnist_{name}.safetensors"
    shutil.copyfile(weights, target)
    entries = manifest()
    entries[name] = {"file": target.name, "sha256": sha256_of(target)}
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries[name]


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, config) of a safetensors file written by ``save_weights``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {})["config"])
            return {k: f.get_tensor(k) for k in f.keys()}, config
    except Exception as exc:
        raise ShippedWeightsError(f"{path} is not a ddpm_lib weights file ({type(exc).__name__}: {exc})") from exc


def load_weights(path: str | Path, device: str = "auto"):
    """The model in a weights file written by ``save_weights``, its schedule and config, ready to sample."""
    from .schedule import NoiseSchedule
    from .trainer import TrainConfig, build_model, resolve_device

    state, saved = read_weights(Path(path))
    config = TrainConfig(**saved)
    dev = resolve_device(device)
    model = build_model(config, dev)
    model.load_state_dict(state)
    return model.eval(), NoiseSchedule(config.schedule, config.timesteps).to(dev), config


def load_any(checkpoint: str | Path | None = None, device: str = "auto", conditional: bool = False):
    """A training checkpoint (.pt), a weights file (.safetensors), or the shipped model when None.

    ``conditional`` picks the shipped class-conditional model, and for a given
    checkpoint insists that it is one (and otherwise that it is not).
    """
    from .trainer import load_checkpoint

    if checkpoint is None:
        return load_weights(shipped_path("conditional" if conditional else "unconditional"), device)
    loader = load_weights if str(checkpoint).endswith(".safetensors") else load_checkpoint
    model, schedule, config = loader(checkpoint, device)
    if model.conditional != conditional:
        raise ValueError(
            f"{checkpoint} is {'a class-conditional' if model.conditional else 'an unconditional'} model; "
            + ("add --conditional (Python: conditional=True)" if model.conditional else "drop --conditional or train one with --conditional")
        )
    return model, schedule, config
