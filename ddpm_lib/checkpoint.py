"""Models on disk: build a SimpleUNet from a config, save and read weights and checkpoints, load any of them.

Two file kinds, neither of which can run code when read:

- ``checkpoint.pt``: everything needed to resume training (weights, EMA,
  optimizer, step, RNG states, config), read with ``torch.load(weights_only=True)``;
- ``*.safetensors``: just one set of weights, with the config in its metadata
  (the EMA weights a run writes, the shipped weights, the classifier).

Before a network is built from either, its recorded config is checked and the
tensors' names and shapes are compared with that network's (built on the meta
device, which allocates nothing): a damaged or crafted file is one line, not
a traceback or a request for terabytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .device import resolve_device
from .objective import noise_predictor
from .pretrained import shipped_path
from .schedule import NoiseSchedule
from .unet import SimpleUNet, UNetConfig

CHECKPOINT_FORMAT = "ddpm_lib.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
EMA_WEIGHTS_NAME = "ema.safetensors"  # just the averaged weights, for sampling and shipping


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used: unreadable, not ours, or for another architecture."""


def build_model(config: TrainConfig, device: torch.device) -> SimpleUNet:
    # channels_last: the layout tensor-core convolutions prefer on a GPU; on the 2-core CPU within about 10% of NCHW
    # either way (tools/memory_format.py, assets/measurements/cpu_memory_format_2026-11-28.md).
    return SimpleUNet(config.model).to(device, memory_format=torch.channels_last)


def read_checkpoint(path: str | Path) -> dict:
    """Load and sanity-check a training checkpoint (weights only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be read ({type(exc).__name__}); it is truncated or not a checkpoint. "
            f"If an interrupted run wrote it, delete it and start again, or point at another checkpoint."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ddpm_lib training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    model = _diffusion_config(ckpt.get("config"), path).model
    _check_tensors_fit(ckpt.get("model"), model, path)
    _check_tensors_fit(ckpt.get("ema"), model, path)
    return ckpt


def _diffusion_config(saved, path) -> TrainConfig:
    """The TrainConfig a checkpoint or weights file records, checked before anything is built from it."""
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(
            f"{path} holds no diffusion model: its config has no model settings (the digit classifier's weights "
            f"look like this); give a run's checkpoint.pt or ema.safetensors instead, or no checkpoint for the shipped weights"
        )
    try:
        return TrainConfig.from_saved(saved)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} records a config no model can have ({exc}); the file is damaged or its metadata was edited") from exc


def _check_tensors_fit(state, model: UNetConfig, path) -> None:
    """Refuse weights that are not those of the network ``model`` describes, before any memory is spent on it."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no table of weight tensors where the model's weights belong; the file is damaged or not ours")
    with torch.device("meta"):  # shapes without storage, however wide the config says the network is
        expected = {name: tuple(t.shape) for name, t in SimpleUNet(model).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    problems = (  # a wrong shape first: it says most about which widths the tensors have
        [f"{name} has shape {found[name]}, not {expected[name]}" for name in expected if found.get(name, expected[name]) != expected[name]]
        + [f"{name} is missing" for name in expected if name not in found]
        + [f"{name} is not in that network" for name in found if name not in expected]
    )  # fmt: skip
    if problems:
        raise CheckpointError(
            f"{path}: the weights do not fit the network its config describes ({model}): {problems[0]}"
            + (f", and {len(problems) - 1} more differences" if len(problems) > 1 else "")
            + "; the file is damaged or its metadata was edited"
        )


def save_weights(state_dict: dict, path: Path, config: dict) -> None:
    """Write weights as safetensors with the config in its metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    # safetensors makes its files private (0600) whatever the umask; give this one the mode any new file
    # gets, as checkpoint.pt has, so that weights in a shared folder can be read by whoever may read the rest.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, config) of a safetensors file written by ``save_weights``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {})["config"])
            # A safe_open handle is not a dict: it has keys() but cannot be iterated (hence the noqa).
            return {k: f.get_tensor(k) for k in f.keys()}, config  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{path} is not a ddpm_lib weights file ({type(exc).__name__}: {exc})") from exc


def _ready_to_sample(config: TrainConfig, state: dict, device: str) -> tuple[nn.Module, NoiseSchedule, TrainConfig]:
    """A noise predictor from weights already checked by ``_check_tensors_fit``."""
    dev = resolve_device(device)
    network = build_model(config, dev)
    network.load_state_dict(state)
    schedule = NoiseSchedule(config.schedule, config.timesteps).to(dev)
    return noise_predictor(network.eval(), schedule, config.prediction), schedule, config


def load_checkpoint(path: str | Path, device: str = "auto", ema: bool = True) -> tuple[nn.Module, NoiseSchedule, TrainConfig]:
    """The noise predictor of a training checkpoint (EMA weights by default), its schedule and config."""
    ckpt = read_checkpoint(path)
    return _ready_to_sample(TrainConfig.from_saved(ckpt["config"]), ckpt["ema" if ema else "model"], device)


def load_weights(path: str | Path, device: str = "auto") -> tuple[nn.Module, NoiseSchedule, TrainConfig]:
    """The noise predictor in a weights file written by ``save_weights``, its schedule and config."""
    state, saved = read_weights(Path(path))
    config = _diffusion_config(saved, path)
    _check_tensors_fit(state, config.model, path)
    return _ready_to_sample(config, state, device)


def load_model(checkpoint: str | Path | None = None, device: str = "auto", conditional: bool = False):
    """A training checkpoint (.pt), a weights file (.safetensors), or the shipped model when None.

    ``conditional`` picks the shipped class-conditional model, and for a given
    checkpoint insists that it is one (and otherwise that it is not).
    """
    if checkpoint is None:
        return load_weights(shipped_path("conditional" if conditional else "unconditional"), device)
    loader = load_weights if str(checkpoint).endswith(".safetensors") else load_checkpoint
    model, schedule, config = loader(checkpoint, device)
    if model.conditional != conditional:
        raise ValueError(
            f"{checkpoint} is {'a class-conditional' if model.conditional else 'an unconditional'} model; "
            + (
                "add --conditional (Python: conditional=True)"
                if model.conditional
                else "drop --conditional or train one with --conditional"
            )
        )
    return model, schedule, config


def checkpoint_state(config: TrainConfig, **state) -> dict:
    """What ``checkpoint.pt`` holds: the format tag, the config as a plain dict, and the run's state."""
    return {"format": CHECKPOINT_FORMAT, "config": asdict(config), **state}
