"""(Maintainers) measure training recipes: sample quality against training time or steps.

    python tools/recipe.py --variant baseline --variant ema_0.99 --minutes 2,5,10,20 --out recipe_cpu.csv
    python tools/recipe.py --variant all --steps 250,500,1000,2000,3000 --out recipe_steps.csv
    python tools/recipe.py --cost nb02_3min --variant nb02_3min_channels_8_32_64 --steps 840 --out cost.csv

Each variant is the TrainConfig of MEASURED_BASE with a few fields changed
(VARIANTS below). It trains once, and at each mark (minutes of optimisation on this
machine, or a step count) draws N digits with DDIM-50 from the EMA weights
and scores them with the shipped classifier: confident fraction and
classifier-FID against the MNIST test set, with the floor of real digits at
the same N. Sampling and scoring are not counted as training time. One CSV
row per (variant, mark); assets/measurements/RECIPE.md's tables are made from such rows.
With --save-weights DIR, the EMA weights at each mark are kept as DIR/NAME_STEPS.safetensors
(config in the metadata), so a run can be rescored with other samplers later.

With --cost REFERENCE, nothing is scored: each variant's seconds per training step are timed
against REFERENCE's in the same process, in alternating bursts (so that a change in the machine's
load falls on both alike), with the forward FLOPs per digit as a cross-check, and each variant is
given the steps that take as long as --steps of REFERENCE.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_lib.bench import quality_during_training
from ddpm_lib.checkpoint import save_weights
from ddpm_lib.config import TrainConfig
from ddpm_lib.device import resolve_device
from ddpm_lib.evaluation import reference_and_floor
from ddpm_lib.trainer import Trainer
from ddpm_lib.unet import SimpleUNet

# The library default when these variants were measured (until 2026-11-28, when the v target and the cosine
# schedule became the default): every variant is this plus its own changes, so old rows stay reproducible.
MEASURED_BASE = {"prediction": "eps", "schedule": "linear"}
# name -> the fields that differ from MEASURED_BASE ("model" fields go in a nested dict).
# The single changes are measured against the recipe before min-SNR became the default (L_simple).
OLD_DEFAULT = {"loss_weighting": "uniform"}
NOTEBOOK_02 = {"loss_weighting": "min_snr", "lr": 4e-3}  # notebook 02's CPU defaults before v and batch 64, on all 60,000 digits
NOTEBOOK_02_V_BATCH_64 = {**NOTEBOOK_02, "train_subset": 12_000, "prediction": "v", "batch_size": 64}
VARIANTS = {
    "baseline": OLD_DEFAULT,
    **{
        name: {**OLD_DEFAULT, **change}
        for name, change in {
            "ema_0.99": {"ema_decay": 0.99},
            "ema_0.995": {"ema_decay": 0.995},
            "ema_off": {"ema_decay": 0.0},
            "min_snr": {"loss_weighting": "min_snr"},
            "v": {"prediction": "v"},
            "v_min_snr": {"prediction": "v", "loss_weighting": "min_snr"},
            "cosine_schedule": {"schedule": "cosine"},
            "lr_1e-3": {"lr": 1e-3},
            "lr_4e-3": {"lr": 4e-3},
            "batch_64": {"batch_size": 64},
            "batch_32": {"batch_size": 32},
            "batch_32_lr_1e-3": {"batch_size": 32, "lr": 1e-3},
            "no_attention": {"model": {"attention": False}},
            "narrow_8_16_32": {"model": {"channels": (8, 16, 32)}},
            "wide_32_64_128": {"model": {"channels": (32, 64, 128)}},
        }.items()
    },
    # Combinations, for the CPU's few minutes: min-SNR won the GPU screen at equal steps.
    "min_snr_narrow": {"loss_weighting": "min_snr", "model": {"channels": (8, 16, 32)}},
    "min_snr_narrow_batch_64": {"loss_weighting": "min_snr", "batch_size": 64, "model": {"channels": (8, 16, 32)}},
    "min_snr_narrow_ema_off": {"loss_weighting": "min_snr", "ema_decay": 0.0, "model": {"channels": (8, 16, 32)}},
    "min_snr_narrow_lr_4e-3": {"loss_weighting": "min_snr", "lr": 4e-3, "model": {"channels": (8, 16, 32)}},
    "min_snr_lr_4e-3": NOTEBOOK_02,
    "min_snr_no_attention": {"loss_weighting": "min_snr", "model": {"attention": False}},
    # Single changes to notebook 02's three-minute recipe (min_snr_lr_4e-3).
    **{
        f"nb02_{name}": {**NOTEBOOK_02, **change}
        for name, change in {
            "ema_off": {"ema_decay": 0.0},
            "v": {"prediction": "v"},
            "cosine_schedule": {"schedule": "cosine"},
            "no_attention": {"model": {"attention": False}},
            "batch_64": {"batch_size": 64},
        }.items()
    },
    # Notebook 02's run exactly (3 epochs of 12,000 digits = 279 steps), with a constant or a cosine learning rate.
    "nb02_subset": {**NOTEBOOK_02, "train_subset": 12_000},
    "nb02_subset_cosine_lr": {**NOTEBOOK_02, "train_subset": 12_000, "lr_schedule": "cosine"},
    "nb02_subset_cosine_lr_8e-3": {**NOTEBOOK_02, "train_subset": 12_000, "lr_schedule": "cosine", "lr": 8e-3},
    "nb02_subset_v": {**NOTEBOOK_02, "train_subset": 12_000, "prediction": "v"},
    "nb02_subset_v_cosine_lr": {**NOTEBOOK_02, "train_subset": 12_000, "prediction": "v", "lr_schedule": "cosine"},
    # The same 3 epochs at batch 64 (561 smaller steps for about the same CPU minutes: notebook 02's
    # defaults now), and single changes to it.
    **{
        f"nb02_subset_v_batch_64{name}": {**NOTEBOOK_02_V_BATCH_64, **change}
        for name, change in {
            "": {},
            "_cosine_lr": {"lr_schedule": "cosine"},
            "_lr_2e-3": {"lr": 2e-3},
            "_lr_8e-3": {"lr": 8e-3},
            "_warmup_25": {"warmup_steps": 25},
            "_cosine_schedule": {"schedule": "cosine"},
            "_cosine_lr_6e-3": {"lr_schedule": "cosine", "lr": 6e-3},
            "_ema_off": {"ema_decay": 0.0},
            "_cosine_lr_ema_warmup_3": {"lr_schedule": "cosine", "ema_warmup": 3},
            "_cosine_lr_ema_warmup_25": {"lr_schedule": "cosine", "ema_warmup": 25},
            "_no_attention": {"model": {"attention": False}},
            "_cosine_lr_cosine_schedule": {"lr_schedule": "cosine", "schedule": "cosine"},
            # Smaller steps again: the same 3 epochs at batch 32 are 1,125 steps (--steps 1125).
            "_cosine_lr_batch_32": {"lr_schedule": "cosine", "batch_size": 32},
            "_cosine_lr_batch_32_lr_3e-3": {"lr_schedule": "cosine", "batch_size": 32, "lr": 3e-3},
        }.items()
    },
}

# Notebook 02's defaults before the narrow network (RECIPE.md): v, min-SNR-5, lr 4e-3 with a 100-step warm-up and
# cosine decay, batch 64, EMA 0.999 ramped over 10 steps, widths 16-32-64 with attention at 7x7, 12,000 digits for
# 3 epochs = 561 steps, 2.0 minutes of training on the idle 2-core Xeon (0.214 s per step). The budget of three
# minutes below is measured in its steps.
NOTEBOOK_02_WIDE = {**NOTEBOOK_02_V_BATCH_64, "lr_schedule": "cosine", "schedule": "cosine"}
BUDGET_STEPS = 840  # three minutes of the Xeon in steps of NOTEBOOK_02_WIDE: 180 s / 0.214 s


def epochs_of(steps: int, epochs: int = 4, batch_size: int = 64) -> dict:
    """The training digits for ``epochs`` epochs of ``steps`` steps in all: the run is planned to end, and its cosine
    learning rate to reach 0, at the mark ``--steps steps``."""
    return {"train_subset": steps * batch_size // epochs}


VARIANTS["nb02_now"] = NOTEBOOK_02_WIDE  # --steps 561: notebook 02's run before the narrow network
# Single changes to notebook 02's run given its whole 3 minutes; a change that makes a step dearer or cheaper
# gets the steps that take as long (--cost; the comment says how many, and the name says --steps).
NOTEBOOK_02_3MIN = {**NOTEBOOK_02_WIDE, **epochs_of(BUDGET_STEPS)}
VARIANTS["nb02_3min"] = NOTEBOOK_02_3MIN  # --steps 840
# Where the network spends its FLOPs, and the batch: each gets the steps that take as long as nb02_3min's 840
# (python tools/recipe.py --cost nb02_3min --variant NAME --steps 840: its CPU seconds per step against nb02_3min's,
# assets/measurements/cpu_recipe_nb02_levers_cost.csv), in 4 epochs as nb02_3min; run each at --steps STEPS.
TIMED_CHANGES = {
    "channels_8_32_64": ({"model": {"channels": (8, 32, 64)}}, 980),
    "channels_8_32_96": ({"model": {"channels": (8, 32, 96)}}, 716),
    "channels_8_48_96": ({"model": {"channels": (8, 48, 96)}}, 580),
    "channels_16_48_96": ({"model": {"channels": (16, 48, 96)}}, 536),
    "channels_12_32_64": ({"model": {"channels": (12, 32, 64), "groups": 4}}, 924),
    "channels_8_24_48": ({"model": {"channels": (8, 24, 48)}}, 1220),
    "channels_8_16_32": ({"model": {"channels": (8, 16, 32)}}, 1764),
    "no_attention": ({"model": {"attention": False}}, 884),
    "channels_8_32_64_no_attention": ({"model": {"channels": (8, 32, 64), "attention": False}}, 1004),
    "blocks_2": ({"model": {"blocks_per_level": 2}}, 608),
    "channels_8_32_64_blocks_2": ({"model": {"channels": (8, 32, 64), "blocks_per_level": 2}}, 704),
    "channels_16_16_32": ({"model": {"channels": (16, 16, 32)}}, 1460),
    "channels_16_24_32": ({"model": {"channels": (16, 24, 32)}}, 1216),
    "channels_8_16_16": ({"model": {"channels": (8, 16, 16)}}, 2060),
    "channels_8_8_16": ({"model": {"channels": (8, 8, 16)}}, 2324),
    "channels_8_16_24": ({"model": {"channels": (8, 16, 24)}}, 1860),
    "channels_8_16_32_no_attention": ({"model": {"channels": (8, 16, 32), "attention": False}}, 1836),
    "channels_8_16_32_blocks_2": ({"model": {"channels": (8, 16, 32), "blocks_per_level": 2}}, 1272),
    "channels_8_16_32_batch_32": ({"model": {"channels": (8, 16, 32)}, "batch_size": 32}, 3160),
    "channels_16_16_16": ({"model": {"channels": (16, 16, 16)}}, 1604),
    "channels_8_16_8": ({"model": {"channels": (8, 16, 8)}}, 2120),
    "channels_8_24_16": ({"model": {"channels": (8, 24, 16)}}, 1624),
    "channels_8_24_24": ({"model": {"channels": (8, 24, 24)}}, 1508),
    "channels_8_16_16_no_attention": ({"model": {"channels": (8, 16, 16), "attention": False}}, 2116),
    "channels_8_16_16_blocks_2": ({"model": {"channels": (8, 16, 16), "blocks_per_level": 2}}, 1432),
    "channels_8_16_16_batch_32": ({"model": {"channels": (8, 16, 16)}, "batch_size": 32}, 3584),
    "channels_8_16_16_batch_128": ({"model": {"channels": (8, 16, 16)}, "batch_size": 128}, 1088),
    "channels_8_16_16_lr_6e-3": ({"model": {"channels": (8, 16, 16)}, "lr": 6e-3}, 2060),
    "channels_8_16_16_ema_warmup_50": ({"model": {"channels": (8, 16, 16)}, "ema_warmup": 50}, 2060),
    "batch_32": ({"batch_size": 32}, 1592),
    "batch_128": ({"batch_size": 128}, 400),
}
VARIANTS.update(
    {
        f"nb02_3min_{name}": {**NOTEBOOK_02_3MIN, **change, **epochs_of(steps, batch_size=change.get("batch_size", 64))}
        for name, (change, steps) in TIMED_CHANGES.items()
    }
)
# Notebook 02's narrow network for the steps that fill three minutes on a 2-core AMD EPYC machine, about 2.5 times as
# fast as the Xeon whose three minutes the nb02_3min budget measures (2,060 steps of 8-16-16 took 1.8 minutes there,
# 0.052 s per step): --steps 3200. Notebook 02 itself runs nb02_3min_channels_8_16_16 (--steps 2060).
VARIANTS["nb02_narrow"] = {**NOTEBOOK_02_3MIN, "model": {"channels": (8, 16, 16)}, **epochs_of(3200)}
# The same recipe given bench --quality's 20 minutes on all 60,000 digits: on the EPYC, 23,000 steps at 0.052 s
# (--steps 5750,11500,17250,23000, a mark every five minutes; the cosine decay planned to end at the last).
VARIANTS["nb02_narrow_all_digits"] = {**NOTEBOOK_02_3MIN, "model": {"channels": (8, 16, 16)}, "train_subset": None}
# Single changes that leave the step's cost alone: --steps 840.
VARIANTS.update(
    {
        f"nb02_3min_{name}": {**NOTEBOOK_02_3MIN, **change}
        for name, change in {
            # The EMA: at step k it averages over about the last (k + ema_warmup) / (ema_warmup - 1) steps until
            # the decay reaches ema_decay (for 0.999, after 9,000 steps: never in these runs), then 1 / (1 - ema_decay).
            "ema_off": {"ema_decay": 0.0},
            "ema_warmup_5": {"ema_warmup": 5},  # a longer average: the last ~1/4 of the run
            "ema_warmup_50": {"ema_warmup": 50},  # a shorter one: the last ~1/50
            "ema_0.98": {"ema_decay": 0.98},  # at most the last ~50 steps
            # The learning rate's peak and warm-up.
            "lr_3e-3": {"lr": 3e-3},
            "lr_6e-3": {"lr": 6e-3},
            "warmup_50": {"warmup_steps": 50},
            "warmup_200": {"warmup_steps": 200},
            # Distinct digits at the same 840 steps: each seen once, or twice.
            "one_epoch": epochs_of(BUDGET_STEPS, epochs=1),
            "two_epochs": epochs_of(BUDGET_STEPS, epochs=2),
            # Where the min-SNR weight puts its cap (Hang et al.'s gamma; 5 is theirs).
            "min_snr_gamma_2": {"min_snr_gamma": 2.0},
            "min_snr_gamma_20": {"min_snr_gamma": 20.0},
            # The plain v loss: in eps terms the weight 1 + 1 / SNR(t), heavy on the noisiest t, where min-SNR-5 gives 1.
            "uniform_weighting": {"loss_weighting": "uniform"},
        }.items()
    }
)
COLUMNS = (
    "variant",
    "device",
    "mark",
    "steps",
    "images",
    "train_seconds",
    "n",
    "confident",
    "fid",
    "floor_fid",
    "fid_ratio",
    "changes",
    "eta",
)


def variant_config(name: str, base: TrainConfig, extra: dict | None = None) -> TrainConfig:
    changes = {**VARIANTS[name], **(extra or {})}
    model = replace(base.model, **changes.pop("model", {}))
    return replace(base, model=model, **changes)


def parse_variant(text: str) -> list[str]:
    names = list(VARIANTS) if text == "all" else text.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)} or all")
    return names


def measure(
    name: str,
    config: TrainConfig,
    marks: list[float],
    by: str,
    n: int,
    etas: tuple[float, ...],
    seed: int = 1,
    weights_dir: Path | None = None,
):
    """Yield one row per mark and eta; ``by`` is "minutes" (of optimisation on this machine) or "steps".
    With ``weights_dir``, the EMA weights at each mark are written there as NAME_STEPS.safetensors."""
    classifier, reference, floor = reference_and_floor(n)
    for point in quality_during_training(config, marks, by, n, classifier, reference, seed, etas):
        if weights_dir is not None and point.eta == etas[0]:
            save_weights(point.model.state_dict(), weights_dir / f"{name}_{point.steps}.safetensors", asdict(config))
        yield {
            "variant": name, "device": str(resolve_device(config.device)), "mark": f"{point.mark:g} {by}", "steps": point.steps,
            "images": point.steps * config.batch_size, "train_seconds": round(point.train_seconds, 1), "n": n,
            "confident": round(point.scores.confident, 4), "fid": round(point.scores.fid, 4), "floor_fid": round(floor.fid, 4),
            "fid_ratio": round(point.scores.fid / floor.fid, 2), "changes": VARIANTS[name], "eta": point.eta,
        }  # fmt: skip


COST_COLUMNS = (
    "variant",
    "reference",
    "forward_mflops",
    "cpu_seconds_per_step",
    "wall_seconds_per_step",
    "relative_cost",
    "relative_wall",
    "steps_in_budget",
    "budget_steps",
    "rounds",
)


def forward_flops(config: TrainConfig) -> float:
    """FLOPs of the network's forward pass for one digit (a multiply-add counts as two)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        SimpleUNet(config.model)(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


def step_costs(names: list[str], reference: str, base: TrainConfig, budget_steps: int, rounds: int = 12, burst: int = 20):
    """Yield one row per variant (the reference first): its seconds per training step and their ratio to the
    reference's, timed in the same process, each round running ``burst`` steps of every variant in turn.

    The cost is the process's CPU time, which time spent waiting for a core that other jobs hold does not inflate
    (one thread: it is the step's own work); the wall time is reported beside it."""
    trainers = {
        name: Trainer(replace(variant_config(name, base), out_dir=None, epochs=10_000), progress=False)
        for name in dict.fromkeys([reference, *names])
    }
    for trainer in trainers.values():
        trainer.train_steps(5)  # allocations and first-call costs stay out of the timing
    cpu = {name: [] for name in trainers}
    wall = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            start = time.process_time()
            wall[name].append(trainer.train_steps(burst) / burst)
            cpu[name].append((time.process_time() - start) / burst)
    for name, trainer in trainers.items():
        # Per round, so that a slow stretch of the machine falls on both sides of the ratio.
        ratio = statistics.median(s / r for s, r in zip(cpu[name], cpu[reference]))
        wall_ratio = statistics.median(s / r for s, r in zip(wall[name], wall[reference]))
        yield {
            "variant": name, "reference": reference, "forward_mflops": round(forward_flops(trainer.config) / 1e6, 1),
            "cpu_seconds_per_step": round(statistics.median(cpu[name]), 4), "wall_seconds_per_step": round(statistics.median(wall[name]), 4),
            "relative_cost": round(ratio, 3), "relative_wall": round(wall_ratio, 3), "steps_in_budget": round(budget_steps / ratio),
            "budget_steps": budget_steps, "rounds": rounds,
        }  # fmt: skip


def row_label(row: dict) -> str:
    """The variant, and the sampler's eta where it added noise (files from before the eta column have none)."""
    eta = float(row.get("eta") or 0)
    return row["variant"] if eta == 0 else f"{row['variant']}, eta {eta:g}"


def markdown_table(paths: list[str]) -> str:
    """The rows of one or more CSV files as a Markdown table: one line per variant (and eta), one column per mark."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += csv.DictReader(f)
    marks = sorted({row["mark"] for row in rows}, key=lambda m: float(m.split()[0]))
    variants = list(dict.fromkeys(row_label(row) for row in rows))
    cell = {(row_label(row), row["mark"]): f"{float(row['fid']):.3g} / {float(row['confident']):.0%}" for row in rows}
    lines = ["| variant | " + " | ".join(marks) + " |", "|---|" + "---|" * len(marks)]
    lines += [f"| {v} | " + " | ".join(cell.get((v, m), "") for m in marks) + " |" for v in variants]
    return "\n".join(lines)


def numbers(text: str) -> list[float]:
    """A comma-separated list of numbers, as --minutes, --steps and --eta take them."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if argv is None and sys.argv[1:2] == ["--table"]:  # python tools/recipe.py --table FILE.csv ...: classifier-FID / confident
        print(markdown_table(sys.argv[2:]))
        return 0
    parser.add_argument("--variant", type=parse_variant, action="extend", required=True, help="a name from VARIANTS, or all")
    marks = parser.add_mutually_exclusive_group(required=True)
    marks.add_argument("--minutes", type=numbers, help="comma-separated minutes of training at which to measure")
    marks.add_argument("--steps", type=numbers, help="comma-separated step counts at which to measure")
    parser.add_argument("--n", type=int, default=2000, help="digits drawn at each mark")
    parser.add_argument(
        "--eta",
        type=numbers,
        default=[0.0],
        help="comma-separated DDIM noise levels to sample with at each mark: 0 deterministic, 1 stochastic",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--out", required=True, help="CSV file; rows are appended")
    parser.add_argument("--save-weights", type=Path, metavar="DIR", help="keep the EMA weights at each mark as DIR/NAME_STEPS.safetensors")
    parser.add_argument(
        "--cost",
        type=parse_variant,
        metavar="REFERENCE",
        help="score nothing: time each variant's training step against this variant's, and give it the steps that take "
        "as long as --steps of it",
    )
    args = parser.parse_args(argv)
    by = "minutes" if args.minutes else "steps"
    points = sorted(args.minutes or args.steps)
    if args.cost and (len(args.cost) != 1 or by != "steps" or len(points) != 1):
        parser.error("--cost takes one reference variant and one --steps value: the reference's budget")
    base = TrainConfig(device=args.device, amp=args.amp, **MEASURED_BASE)
    columns = COST_COLUMNS if args.cost else COLUMNS
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.save_weights:
        args.save_weights.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists()
    if not new_file:
        with open(out, newline="") as f:
            header = next(csv.reader(f), [])
        if header != list(columns):
            parser.error(f"{out} has the columns {header}, not this tool's {list(columns)}; give a new --out file")
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, columns)
        if new_file:
            writer.writeheader()
        if args.cost:
            for row in step_costs(args.variant, args.cost[0], base, int(points[0])):
                writer.writerow(row)
                print(
                    f"{row['variant']:>40}  {row['forward_mflops']:>7.1f} MFLOP/digit  {row['cpu_seconds_per_step']:.4f} CPU s/step  "
                    f"x{row['relative_cost']:.3f} (wall x{row['relative_wall']:.3f})  {row['steps_in_budget']} steps in {points[0]:g} of "
                    f"{row['reference']}",
                    flush=True,
                )
            return 0
        for name in args.variant:
            start = time.perf_counter()
            for row in measure(name, variant_config(name, base), points, by, args.n, tuple(args.eta), weights_dir=args.save_weights):
                writer.writerow(row)
                f.flush()
                print(
                    f"{name:>18}  {row['mark']:>12}  {row['steps']:>6} steps  eta {row['eta']:g}  {row['confident']:.1%} confident  "
                    f"FID {row['fid']:.3f} ({row['fid_ratio']}x floor)  [{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
