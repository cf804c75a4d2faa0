"""Command line: ``python -m ddpm_lib COMMAND ...`` (or ``ddpm-mnist COMMAND ...``).

The spellings of these commands and flags are a public interface: outside
scripts rely on them, so change them only with a deprecation.

A command is one row of ``COMMANDS`` below: its name, one line of help, a
function that adds its flags and one that runs it. The parser, the dispatch
and the list of commands at the end of this docstring are all made from it.
A mistake the user can fix (a flag, a file) ends in one line and exit code 2;
anything else is a bug and shows its traceback.

Commands:
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import evaluation, sampling
from .checkpoint import CheckpointError, load_model, save_weights
from .config import TrainConfig
from .constants import DEFAULT_GUIDANCE, SAMPLING_BATCH
from .data import MNISTUnavailable, load_mnist
from .device import autocast, model_device, resolve_device, resolve_precision
from .metrics import MIN_DIGITS, accuracy, train_classifier
from .pretrained import ShippedWeightsError
from .runfolder import ExistingRun, NoRunToResume, RunFolderError, atomic_write, check_writable

# trainer, plots and bench (matplotlib) are imported by the commands that use them, when they run:
# --help and a refused flag answer without waiting for them.

MAX_DIGITS = 1_000_000  # --n: more digits than anyone samples from a 28x28 model, refused before allocating
MAX_BATCH = 20_000  # --batch-size: larger batches gain no speed and risk exhausting memory
# --n of evaluate and sweep: the classifier-FID estimates a 128 x 128 feature covariance, whose
# estimate is too noisy below a few hundred digits to compare runs; fewer than this get a warning.
RELIABLE_FID_DIGITS = 500
# --seed: every command adds to it (a batch's or an epoch's own seed) and torch takes seeds of 64 bits.
MAX_SEED = 2**32 - 1


class UsageError(Exception):
    """Flags that parse one by one but not together, or not with the model given: the user's to fix."""


# ------------------------------------------------------------------ flag types


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_PARSERS = {int: _whole, float: _number, str: str}  # a flag's text as a value of each type; where it must lie is checked later


def _positive(kind, at_most: float = math.inf):
    """A parser for a positive, finite number of type ``kind``, refusing absurd sizes before any work starts."""

    def parse(text: str):
        value = _PARSERS[kind](text)
        if not (0 < value <= at_most) or value == math.inf:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be positive{'' if at_most == math.inf else f' and at most {at_most:,}'}, got {text}")
        return value

    return parse


def _non_negative(text: str) -> float:
    value = _number(text)
    if not 0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text}")
    return value


def _list_of(parse_one):
    """A comma-separated list, each item read by ``parse_one``; the message names the item that failed."""

    def parse(text: str):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        values = []
        for item in items:
            try:
                values.append(parse_one(item))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{item!r} in {text!r}: {exc}") from None
        return values

    return parse


def _file_ending_in(*suffixes: str):
    def parse(text: str) -> str:
        if Path(text).suffix not in suffixes:
            raise argparse.ArgumentTypeError(f"must end in {' or '.join(suffixes)}, got {text}")
        return text

    return parse


def _device(text: str) -> str:
    """The name as given ("auto" stays "auto"), once it names a device this machine has."""
    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED:,}, got {text}")
    return value


def _run_folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name the run folder, got {text!r}")
    return text


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three whole numbers such as 32,64,128, got {text!r}") from None


# ------------------------------------------------------------------- commands


# The train flags are made from TrainConfig's fields and their help: "--" and the name with "-" for "_", or
# "--no-" and the name for a setting that is on by default. These keep the spellings outside scripts use.
TRAIN_FLAG_SPELLING = {"out_dir": "--out", "train_subset": "--subset"}
TRAIN_FLAG_PARSERS = {"device": _device, "seed": _seed, "out_dir": _run_folder}  # settings checked beyond their type as they are parsed
REQUIRED_TRAIN_SETTINGS = ("epochs", "out_dir")  # a run's length and its folder are always said, never defaults


def _train_flag(setting: dataclasses.Field) -> str:
    """The flag that sets the TrainConfig field ``setting``."""
    if setting.name in TRAIN_FLAG_SPELLING:
        return TRAIN_FLAG_SPELLING[setting.name]
    return f"--{'no-' if setting.default is True else ''}{setting.name.replace('_', '-')}"


def _train_settings() -> list[tuple[dataclasses.Field, object]]:
    """The fields of TrainConfig a flag sets, with their types; ``model`` has flags of its own (``_train_flags``)."""
    hints = typing.get_type_hints(TrainConfig)
    return [(setting, hints[setting.name]) for setting in dataclasses.fields(TrainConfig) if setting.name != "model"]


def _parser_of(kind, name: str):
    """How the text of a flag becomes a value of type ``kind``; TrainConfig checks its range afterwards."""
    if name in TRAIN_FLAG_PARSERS:
        return TRAIN_FLAG_PARSERS[name]
    members = (
        [member for member in typing.get_args(kind) if member is not type(None)]
        if typing.get_origin(kind) in (typing.Union, types.UnionType)
        else [kind]
    )
    if any(member not in _PARSERS for member in members):
        raise TypeError(f"TrainConfig.{name} has type {kind}, for which the command line has no parser: add one to cli._PARSERS")
    if len(members) == 1:
        return _PARSERS[members[0]]

    def parse(text: str):  # int | str: a whole number where the text is one, else the text
        for member in members:
            try:
                return _PARSERS[member](text)
            except argparse.ArgumentTypeError:
                continue
        raise argparse.ArgumentTypeError(f"expected {' or '.join(member.__name__ for member in members)}, got {text!r}")

    return parse


def _train_flags(p: argparse.ArgumentParser):
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument(
        "--allow-changes", action="store_true", help="with --resume: accept changed settings (recorded in the checkpoint's history)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    settings = p.add_argument_group("training settings (ddpm_lib.config.TrainConfig; the default where a flag is not given)")
    for setting, kind in _train_settings():
        meaning = setting.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            switch = "turn off" if setting.default else "turn on"
            settings.add_argument(
                _train_flag(setting), dest=setting.name, action="store_const", const=not setting.default, help=f"{switch}: {meaning}"
            )
            continue
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else setting.metadata.get("choices")
        required = setting.name in REQUIRED_TRAIN_SETTINGS
        settings.add_argument(
            _train_flag(setting),
            dest=setting.name,
            type=None if choices else _parser_of(kind, setting.name),
            choices=tuple(choices) if choices else None,
            required=required,
            metavar=None if choices else _train_flag(setting)[2:].upper().replace("-", "_"),
            help=meaning if required or setting.default is None else f"{meaning} (default {setting.default})",
        )
    network = p.add_argument_group("the network (TrainConfig.model, a ddpm_lib.unet.UNetConfig)")
    network.add_argument("--channels", type=_channels, help="widths at 28, 14, 7 pixels, e.g. 32,64,128")
    network.add_argument("--no-attention", action="store_true", help="leave out the self-attention at 7x7")
    network.add_argument("--conditional", action="store_true", help="learn the digit's label too, for classifier-free guidance")


def _train_config(args) -> TrainConfig:
    """The flags as a TrainConfig; its own checks (ranges, combinations) become usage errors naming the flag."""
    if args.p_uncond is not None and not args.conditional:
        raise UsageError("--p-uncond only applies with --conditional")
    default = TrainConfig().model
    try:
        model = replace(
            default, channels=args.channels or default.channels, attention=not args.no_attention, num_classes=10 if args.conditional else 0
        )
    except ValueError as exc:  # UNetConfig's checks of the widths
        raise UsageError(f"--channels: {exc}") from None
    given = {setting.name: getattr(args, setting.name) for setting, _ in _train_settings() if getattr(args, setting.name) is not None}
    try:
        resolve_precision(given.get("amp", "auto"), resolve_device(given.get("device", "auto")))
    except ValueError as exc:  # fp16 asked for without a GPU
        raise UsageError(f"--amp: {exc}") from None
    try:
        return TrainConfig(model=model, **given)
    except ValueError as exc:  # TrainConfig's checks: "ema_decay must be ..." becomes "--ema-decay must be ..."
        name, _, rest = str(exc).partition(" ")
        flags = {setting.name: _train_flag(setting) for setting in dataclasses.fields(TrainConfig)}
        raise UsageError(f"{flags.get(name, name)} {rest}") from None


def _train(args) -> int:
    from .trainer import train

    config = _train_config(args)
    result = train(config, resume=args.resume, progress=not args.quiet, allow_changes=args.allow_changes)
    print(
        f"trained {result.epochs_done} epochs on {result.device} ({result.precision}{', CUDA graph' if result.graphed else ''}); "
        f"final loss {sum(result.losses[-100:]) / len(result.losses[-100:]):.4f}"
    )
    print(f"outputs in {result.out_dir}: checkpoint.pt, ema.safetensors, epoch grids, loss_history.csv")
    return 0


def _model_flags(p: argparse.ArgumentParser, n_default: int, checkpoint_help: str):
    """What every command that samples a model shares: which model, how many digits, where and how fast."""
    p.add_argument("--checkpoint", help=checkpoint_help)
    p.add_argument("--n", type=_positive(int, at_most=MAX_DIGITS), default=n_default, help=f"number of digits (default {n_default:,})")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", type=_device, default="auto")
    p.add_argument("--batch-size", type=_positive(int, at_most=MAX_BATCH), default=SAMPLING_BATCH, help="digits sampled at once (memory)")


def _sampling_flags(p: argparse.ArgumentParser, n_default: int):
    _model_flags(p, n_default, "training checkpoint (.pt) or weights (.safetensors); default: the shipped weights")
    samplers = sampling.SAMPLER_REGISTRY.values()
    with_steps = "/".join(s.name for s in samplers if s.uses_steps)
    with_eta = "/".join(s.name for s in samplers if s.has_eta)
    p.add_argument(
        "--sampler",
        choices=tuple(sampling.SAMPLER_REGISTRY),
        default=sampling.DEFAULT_SAMPLER,
        help="; ".join(f"{s.name}: {'--steps steps' if s.uses_steps else 'all T steps'}" for s in samplers),
    )
    p.add_argument("--steps", type=_positive(int), default=50, help=f"steps of {with_steps} (the others take all T; default 50)")
    p.add_argument("--eta", type=_non_negative, default=0.0, help=f"{with_eta} noise: 0 deterministic, 1 like DDPM (default 0)")
    p.add_argument("--conditional", action="store_true", help="use a class-conditional model (default: the shipped one)")
    p.add_argument(
        "--guidance",
        type=_non_negative,
        help=f"with --conditional: guidance weight w, 0 ignores the label, 1 plain conditional (default {DEFAULT_GUIDANCE:g})",
    )


def _sample_flags(p: argparse.ArgumentParser):
    _sampling_flags(p, n_default=64)
    p.add_argument(
        "--class",
        dest="digit",
        type=int,
        choices=range(10),
        metavar="K",
        help="with --conditional: draw only the digit K (default: rows of 0..9)",
    )
    p.add_argument(
        "--out",
        type=_file_ending_in(".png", ".npz"),
        required=True,
        help="FILE.png (a grid) or FILE.npz (keys 'images', uint8, N x 28 x 28, and 'labels' if conditional)",
    )


def _sample(args) -> int:
    from .plots import save_grid, to_uint8

    out = Path(args.out)
    check_writable(out)  # before minutes of sampling
    guidance = _guidance_request(args)
    model, schedule = _load_model(args, conditional=args.conditional)
    _check_steps(args.sampler, [args.steps], schedule.timesteps, "--steps")
    device = model_device(model)
    with autocast(device, resolve_precision("auto", device)):  # the precision evaluate samples in: one seed, one set of digits
        images = sampling.sample_many(model, schedule, args.n, args.sampler, args.steps, args.seed, args.eta, args.batch_size, guidance)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        atomic_write(out, lambda tmp: save_grid(images, tmp, nrow=10 if args.conditional and args.digit is None else None))
    else:
        arrays = {"images": to_uint8(images)}
        if guidance is not None:
            arrays["labels"] = guidance.labels.numpy().astype(np.uint8)
        atomic_write(out, lambda tmp: np.savez_compressed(tmp, **arrays))
    what = "" if guidance is None else f", {'rows of 0-9' if args.digit is None else f'digit {args.digit}'}, guidance {guidance.weight:g}"
    print(f"wrote {args.n} digits ({sampling.get_sampler(args.sampler).describe(args.steps, schedule.timesteps)}{what}) to {out}")
    return 0


def _guidance_request(args):
    """The labels and weight to sample with, or None for an unconditional model."""
    weight, digit = _guidance_weight(args), args.digit
    if weight is None:
        if digit is not None:
            raise UsageError("--class needs a class-conditional model: add --conditional")
        return None
    labels = sampling.balanced_labels(args.n) if digit is None else torch.full((args.n,), digit)
    return sampling.Guidance(labels, weight)


def _guidance_weight(args) -> float | None:
    """w for a conditional run (the default when not given); None for an unconditional one."""
    if not args.conditional:
        if args.guidance is not None:
            raise UsageError("--guidance needs a class-conditional model: add --conditional")
        return None
    return DEFAULT_GUIDANCE if args.guidance is None else args.guidance


def _load_model(args, conditional: bool, remedy: str | None = None):
    """The model and schedule that --checkpoint (or the shipped weights) holds. ``remedy``: what to do about a model
    of the other kind (conditional or not), for a command whose flags are not the ones ``load_model`` names."""
    try:
        model, schedule, _ = load_model(args.checkpoint, args.device, conditional=conditional, remedy=remedy)
    except ValueError as exc:  # the device is checked by now: a model of the other kind (conditional or not) than asked for
        raise UsageError(str(exc)) from None
    return model, schedule


def _sampler_name(text: str) -> str:
    """The name as given, once it names a registered sampler."""
    try:
        sampling.get_sampler(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _check_steps(sampler: sampling.SamplerName, step_counts: list[int], timesteps: int, flag: str):
    """Refuse, before any sampling, a step count the model's schedule does not have (for a sampler that takes a step count)."""
    too_many = [steps for steps in step_counts if steps > timesteps]
    if sampling.get_sampler(sampler).uses_steps and too_many:
        raise UsageError(f"{flag} {too_many[0]} is more than the model's {timesteps} timesteps")


def _check_fid_digits(n: int):
    """Refuse an --n the classifier-FID cannot use (a covariance of one digit), warn below a reliable one."""
    if n < MIN_DIGITS:
        raise UsageError(f"--n must be at least {MIN_DIGITS} here: the classifier-FID fits a covariance to the digits' features")
    if n < RELIABLE_FID_DIGITS:
        print(
            f"warning: --n {n} is below {RELIABLE_FID_DIGITS} digits, where the classifier-FID is too noisy to compare runs",
            file=sys.stderr,
        )


def _evaluate_flags(p: argparse.ArgumentParser):
    _sampling_flags(p, n_default=10_000)


def _evaluate(args) -> int:
    _check_fid_digits(args.n)
    guidance = _guidance_weight(args)
    model, schedule = _load_model(args, conditional=guidance is not None)
    _check_steps(args.sampler, [args.steps], schedule.timesteps, "--steps")
    print(evaluation.evaluate_model(model, schedule, args.n, args.sampler, args.steps, args.seed, args.eta, args.batch_size, guidance))
    return 0


def _sweep_flags(p: argparse.ArgumentParser):
    _model_flags(p, 10_000, "a conditional checkpoint or weights; default: the shipped conditional weights")
    p.add_argument("--guidance", type=_list_of(_non_negative), default=[0, 0.5, 1, 2, 3, 4, 6], help="weights w for the guidance curve")
    samplers = sampling.SAMPLER_REGISTRY.values()
    p.add_argument(
        "--guidance-sampler",
        choices=tuple(sampling.SAMPLER_REGISTRY),
        default=sampling.DEFAULT_SAMPLER,
        help="sampler of the guidance curve",
    )
    p.add_argument("--guidance-steps", type=_positive(int), default=50, help="steps of the guidance curve's sampler (default 50)")
    p.add_argument(
        "--samplers",
        type=_list_of(_sampler_name),
        help=f"samplers of the steps curve, comma-separated (default: all, {','.join(s.name for s in samplers)})",
    )
    p.add_argument(
        "--steps",
        type=_list_of(_positive(int)),
        default=[10, 20, 50, 100, 1000],
        help=f"step counts for the steps curve, for {'/'.join(s.name for s in samplers if s.uses_steps)} (the others take all T steps once)",
    )
    p.add_argument("--steps-guidance", type=_non_negative, help="w for the steps curve (default: lowest FID on the guidance curve)")
    p.add_argument(
        "--no-ddpm",
        action="store_true",
        help=f"leave the samplers that always take all T steps ({'/'.join(s.name for s in samplers if not s.uses_steps)}), slow on a CPU, out of the steps curve",
    )
    p.add_argument("--out", type=_file_ending_in(".csv"), required=True, help="FILE.csv")


def _sweep(args) -> int:
    out = Path(args.out)
    check_writable(out)
    _check_fid_digits(args.n)
    model, schedule = _load_model(args, conditional=True, remedy="sweep needs one trained with `train --conditional`")
    _check_steps(args.guidance_sampler, [args.guidance_steps], schedule.timesteps, "--guidance-steps")
    for sampler in args.samplers or sampling.SAMPLER_REGISTRY:
        _check_steps(sampler, args.steps, schedule.timesteps, "--steps")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []

    def log(row):
        rows.append(row)
        # The whole file again after every point: an interrupted sweep keeps the points it measured, and an
        # earlier file under that name stays whole until the first new point replaces it.
        atomic_write(out, lambda tmp: _write_curve_rows(tmp, rows))
        print(
            f"{row['curve']:>8}  {row['sampler']} {row['steps']:>4} steps  w={row['guidance']:<4g} FID {row['fid']:.3f} "
            f"(floor {row['floor_fid']:.3f})  worst digit {row['worst_digit_accuracy']:.1%}  {row['seconds']:.1f} s",
            flush=True,
        )

    evaluation.guidance_and_steps_curves(
        model,
        schedule,
        args.n,
        args.guidance,
        args.steps,
        args.guidance_steps,
        args.steps_guidance,
        include_ddpm=not args.no_ddpm,
        seed=args.seed,
        batch_size=args.batch_size,
        log=log,
        samplers=args.samplers,
        guidance_sampler=args.guidance_sampler,
    )
    print(f"wrote {out}")
    return 0


def _write_curve_rows(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, evaluation.CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _train_classifier_flags(p: argparse.ArgumentParser):
    p.add_argument("--epochs", type=_positive(int), default=5)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", type=_file_ending_in(".safetensors"), required=True, help="FILE.safetensors")


def _train_classifier(args) -> int:
    check_writable(Path(args.out))
    images, labels = load_mnist(train=True)
    classifier = train_classifier(images, labels, epochs=args.epochs, seed=args.seed)
    test_accuracy = accuracy(classifier, *load_mnist(train=False))
    metadata = {"epochs": args.epochs, "seed": args.seed, "test_accuracy": test_accuracy}
    atomic_write(args.out, lambda tmp: save_weights(classifier.state_dict(), tmp, metadata))
    print(f"classifier test accuracy {test_accuracy:.2%} on the 10,000 MNIST test digits; weights in {args.out}")
    return 0


def _bench_flags(p: argparse.ArgumentParser):
    p.add_argument("--device", type=_device, default="auto")
    p.add_argument("--quality", action="store_true", help="also train until 90%% of samples are confidently classified")
    p.add_argument("--quality-minutes", type=_positive(float), default=20, help="give up after this many minutes of training")
    p.add_argument("--seconds", type=_positive(float), default=8.0, help="time each training row for this long")


def _bench(args) -> int:
    from .bench import run_bench

    print(run_bench(args.device, quality=args.quality, quality_minutes=args.quality_minutes, seconds=args.seconds))
    return 0


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # the line in --help and in this module's docstring
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    if_interrupted: str = ""  # what Ctrl-C leaves behind, where the user can do something with it


COMMANDS = {
    command.name: command
    for command in (
        Command("train", "train a SimpleUNet on MNIST", _train_flags, _train,
                if_interrupted="the last finished epoch's checkpoint is intact; continue with --resume"),
        Command("sample", "draw digits into a PNG grid or an .npz array", _sample_flags, _sample),
        Command("evaluate", "classifier-FID, confident fraction and class histogram of samples", _evaluate_flags, _evaluate),
        Command("sweep", "(conditional) classifier-FID and accuracy against guidance weight and each sampler's steps, to CSV", _sweep_flags, _sweep),
        Command("train-classifier", "train the digit classifier behind `evaluate` and report its test accuracy", _train_classifier_flags, _train_classifier),
        Command("bench", "print training and sampling speed on this machine", _bench_flags, _bench),
    )
}  # fmt: skip
if __doc__ is not None:  # python -OO drops docstrings
    __doc__ += "".join(f"    {command.name:<18}{command.summary}\n" for command in COMMANDS.values())
DESCRIPTION = "Denoising diffusion on MNIST from the shell (ddpm-mnist COMMAND is the same); each command has its own --help."


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for command in COMMANDS.values():
        commands[command.name] = sub.add_parser(command.name, help=command.summary, description=command.summary)
        command.add_flags(commands[command.name])
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    return _parsers()[0]


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parsers()
    args = parser.parse_args(argv)
    command = COMMANDS[args.command]
    try:
        return command.run(args)
    except UsageError as exc:
        commands[command.name].error(str(exc))  # exits with code 2, like a flag argparse refused itself
    except (CheckpointError, MNISTUnavailable, ShippedWeightsError, RunFolderError, ExistingRun, NoRunToResume) as exc:
        print(f"error: {exc}", file=sys.stderr)  # a file or folder the user named, or the data and weights it needs
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted{': ' + command.if_interrupted if command.if_interrupted else ''}", file=sys.stderr)
        return 130
