"""(Maintainers) measure training recipes: sample quality against training time or steps.

    python tools/recipe.py --variant baseline --variant ema_0.99 --minutes 2,5,10,20 --out recipe_cpu.csv
    python tools/recipe.py --variant all --steps 250,500,1000,2000,3000 --out recipe_steps.csv

Each variant is the TrainConfig of MEASURED_BASE with a few fields changed
(VARIANTS below). It trains once, and at each mark (minutes of optimisation on this
machine, or a step count) draws N digits with DDIM-50 from the EMA weights
and scores them with the shipped classifier: confident fraction and
classifier-FID against the MNIST test set, with the floor of real digits at
the same N. Sampling and scoring are not counted as training time. One CSV
row per (variant, mark); the README's recipe table is made from such rows.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

from ddpm_lib.bench import quality_during_training
from ddpm_lib.config import TrainConfig
from ddpm_lib.device import resolve_device
from ddpm_lib.evaluation import reference_and_floor

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


def measure(name: str, config: TrainConfig, marks: list[float], by: str, n: int, etas: tuple[float, ...], seed: int = 1):
    """Yield one row per mark and eta; ``by`` is "minutes" (of optimisation on this machine) or "steps"."""
    classifier, reference, floor = reference_and_floor(n)
    for point in quality_during_training(config, marks, by, n, classifier, reference, seed, etas):
        yield {
            "variant": name, "device": str(resolve_device(config.device)), "mark": f"{point.mark:g} {by}", "steps": point.steps,
            "images": point.steps * config.batch_size, "train_seconds": round(point.train_seconds, 1), "n": n,
            "confident": round(point.scores.confident, 4), "fid": round(point.scores.fid, 4), "floor_fid": round(floor.fid, 4),
            "fid_ratio": round(point.scores.fid / floor.fid, 2), "changes": VARIANTS[name], "eta": point.eta,
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
    args = parser.parse_args(argv)
    by = "minutes" if args.minutes else "steps"
    points = sorted(args.minutes or args.steps)
    base = TrainConfig(device=args.device, amp=args.amp, **MEASURED_BASE)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists()
    if not new_file:
        with open(out, newline="") as f:
            header = next(csv.reader(f), [])
        if header != list(COLUMNS):
            parser.error(f"{out} has the columns {header}, not this tool's {list(COLUMNS)}; give a new --out file")
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new_file:
            writer.writeheader()
        for name in args.variant:
            start = time.perf_counter()
            for row in measure(name, variant_config(name, base), points, by, args.n, tuple(args.eta)):
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
