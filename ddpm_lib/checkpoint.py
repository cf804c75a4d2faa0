"""Models on disk: build a SimpleUNet from a config, save and read weights and checkpoints, load any of them.

Two file kinds, neither of which can run code when read:

- ``checkpoint.pt``: everything needed to resume training (weights, EMA,
  optimizer, step, RNG states, config), read with ``torch.load(weights_only=True)``;
- ``*.safetensors``: just one set of weights, with the config in its metadata
  (the EMA weights a run writes, the shipped weights, the classifier).

Before a network is built from either, its recorded config is checked, the
tensors' names and shapes are compared with that network's (built on the meta
device, which allocates nothing) and their values must be finite; before a run
is resumed, the checkpoint's bookkeeping (epoch, step, losses, random state,
optimizer) is checked too (``check_training_state``): a damaged or crafted file
is one line naming what is wrong, not a traceback, a request for terabytes, or
a run of blank digits.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .device import resolve_device
from .objective import noise_predictor
from .pretrained import shipped_path
from .runfolder import REGULAR_FILE, file_kind, new_file_mode
from .schedule import NoiseSchedule
from .unet import SimpleUNet, UNetConfig

CHECKPOINT_FORMAT = "ddpm_lib.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
EMA_WEIGHTS_NAME = "ema.safetensors"  # just the averaged weights, for sampling and shipping
DIGIT_CLASSES = 10  # what a conditional model is asked for when it is sampled: the digits 0 to 9


class CheckpointError(RuntimeError):
    """A checkpoint or weights file that cannot be used: unreadable, not ours, or for another architecture."""


def build_model(config: TrainConfig, device: torch.device) -> SimpleUNet:
    # channels_last: the layout tensor-core convolutions prefer on a GPU; on the 2-core CPU within about 10% of NCHW
    # either way (tools/memory_format.py, assets/measurements/cpu_memory_format_2026-11-28.md).
    return SimpleUNet(config.model).to(device, memory_format=torch.channels_last)


def _check_is_a_file(path: Path, what: str) -> None:
    """Refuse a missing path, a folder, or a FIFO (reading one would wait forever for a writer) before opening it."""
    kind = file_kind(path)
    if kind is None:
        raise CheckpointError(f"no {what} at {path}")
    if kind != REGULAR_FILE:
        raise CheckpointError(f"{path} is {kind}, not a {what}; give the path of the file itself")


def read_checkpoint(path: str | Path) -> dict:
    """Load and sanity-check a training checkpoint (weights only, no pickled code)."""
    path = Path(path)
    _check_is_a_file(path, "checkpoint")
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
    not_finite = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if not_finite:
        raise CheckpointError(
            f"{path}: {not_finite[0]}"
            + (f" and {len(not_finite) - 1} more tensors hold" if len(not_finite) > 1 else " holds")
            + " NaN or infinite values, which draw no digits; the file is damaged or its run diverged: use an earlier checkpoint or train again"
        )


def save_weights(state_dict: dict, path: Path, config: dict) -> None:
    """Write weights as safetensors with the config in its metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    # safetensors makes its files private (0600) whatever the umask; give this one the mode any new file
    # gets, as checkpoint.pt has, so that weights in a shared folder can be read by whoever may read the rest.
    os.chmod(path, new_file_mode())


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, config) of a safetensors file written by ``save_weights``."""
    from safetensors import safe_open

    _check_is_a_file(Path(path), "weights file")
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


def load_model(checkpoint: str | Path | None = None, device: str = "auto", conditional: bool = False, remedy: str | None = None):
    """A training checkpoint (.pt), a weights file (.safetensors), or the shipped model when None.

    ``conditional`` picks the shipped class-conditional model, and for a given
    checkpoint insists that it is one, of the ten digits (and otherwise that it is not).
    ``remedy`` is what to do about a checkpoint of the other kind, in the words of
    whoever gave it (a notebook names its own parameter); by default the command
    line's flags.
    """
    if checkpoint is None:
        return load_weights(shipped_path("conditional" if conditional else "unconditional"), device)
    loader = load_weights if str(checkpoint).endswith(".safetensors") else load_checkpoint
    model, schedule, config = loader(checkpoint, device)
    if model.conditional != conditional:
        flags = (
            "add --conditional (Python: conditional=True)" if model.conditional else "drop --conditional or train one with --conditional"
        )
        raise ValueError(f"{checkpoint} is {'a class-conditional' if model.conditional else 'an unconditional'} model; {remedy or flags}")
    if conditional and config.model.num_classes != DIGIT_CLASSES:
        raise CheckpointError(
            f"{checkpoint} is a class-conditional model of {config.model.num_classes} classes, not of the {DIGIT_CLASSES} digits "
            f"that sampling asks for; give a model trained on MNIST with --conditional"
        )
    return model, schedule, config


def damaged_field(path, field: str, problem: str) -> CheckpointError:
    """The one line for a checkpoint whose ``field`` a resumed run cannot continue from."""
    return CheckpointError(
        f"{path}: {field} {problem}; the checkpoint is damaged or was edited, so the run cannot go on from it: "
        f"restore the file, or start a new run in another out_dir"
    )


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def epoch_ends(ckpt: dict) -> list[int]:
    """The step count at the end of each finished epoch. Checkpoints that do not record them ran
    every epoch at one batch size, so their epochs are equal parts of the steps."""
    if "epoch_ends" in ckpt:
        return list(ckpt["epoch_ends"])
    epoch, step = ckpt["epoch"], ckpt["step"]
    return [step * (k + 1) // epoch for k in range(epoch)]


def check_training_state(ckpt: dict, path) -> None:
    """Refuse, naming the field, a checkpoint (already read by ``read_checkpoint``) whose bookkeeping a
    resumed run could not continue from: the epoch and step, one loss per step, the epochs' ends, the
    random state, the optimizer's and loss scaler's state and the history of changed settings.

    Whether the random state and the optimizer's state fit this trainer is for ``Trainer`` to find
    out as it loads them (``damaged_field`` gives its line).
    """
    epoch, step, losses = ckpt.get("epoch"), ckpt.get("step"), ckpt.get("losses")
    if not _is_count(epoch) or epoch < 1:
        raise damaged_field(path, "epoch", f"must be a whole number, at least 1, not {epoch!r}")
    if not _is_count(step) or step < epoch:
        raise damaged_field(path, "step", f"must be a whole number, at least the epoch ({epoch}), not {step!r}")
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or not losses.is_floating_point():
        raise damaged_field(path, "losses", f"must be a one-dimensional tensor of numbers, not {type(losses).__name__}")
    if len(losses) != step:
        raise damaged_field(path, "losses", f"holds {len(losses)} values for {step} steps")
    ends = ckpt.get("epoch_ends")
    if ends is not None and not (
        isinstance(ends, list)
        and len(ends) == epoch
        and all(_is_count(end) for end in ends)
        and all(a < b for a, b in pairwise([0, *ends]))
        and ends[-1] == step
    ):
        raise damaged_field(path, "epoch_ends", f"must list the step at which each of the {epoch} epochs ended, rising to {step}")
    rng = ckpt.get("rng")
    if not isinstance(rng, dict) or not isinstance(rng.get("noise"), torch.Tensor) or rng["noise"].dtype != torch.uint8:
        raise damaged_field(path, "rng", "must hold the noise generator's state as bytes (rng.noise)")
    optimizer = ckpt.get("optimizer")
    if (
        not isinstance(optimizer, dict)
        or not isinstance(optimizer.get("state"), dict)
        or not isinstance(optimizer.get("param_groups"), list)
    ):
        raise damaged_field(path, "optimizer", "must hold AdamW's state and parameter groups")
    if not isinstance(ckpt.get("scaler"), dict):
        raise damaged_field(path, "scaler", "must hold the loss scaler's state (a table, empty without fp16)")
    history = ckpt.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(entry, dict) and _is_count(entry.get("step")) and isinstance(entry.get("changes"), list) for entry in history
    ):
        raise damaged_field(path, "history", "must list the changed settings, each with the step it took effect")


def checkpoint_state(config: TrainConfig, **state) -> dict:
    """What ``checkpoint.pt`` holds: the format tag, the config as a plain dict, and the run's state."""
    return {"format": CHECKPOINT_FORMAT, "config": asdict(config), **state}
