"""Numbers and names that modules of different layers share, in a module that imports nothing of the library.

A constant lives here when a module needs it from a module it has no other reason to import: reading
the size of a sampling batch from the training config would make importing the samplers load the
config, and with it the MNIST downloader. A constant that only its own module reads stays there.

The closed sets of names are ``Literal`` types, for the signatures that take them, with their
values as tuples, for the checks and menus that list them. Sampler and schedule names are not
here: they are the keys of registries (``sampling.SAMPLER_REGISTRY``, ``schedule.SCHEDULE_REGISTRY``)
that a user may extend, so no fixed list can name them.
"""

from __future__ import annotations

from typing import Literal, get_args

TRAINING_DIGITS = 60_000  # the size of MNIST's training set
SAMPLING_BATCH = 500  # digits drawn at once, bounding memory whatever n; batch k uses seed + k, so it also decides the digits a seed gives
DEFAULT_GUIDANCE = 2.0  # w for conditional sampling: the smallest that made every digit >= 98% recognisable (MODEL_CARD_conditional.md)

PredictionTarget = Literal["eps", "v"]  # what the network outputs: the noise (Ho et al.) or the velocity v (Salimans & Ho)
LossWeighting = Literal["uniform", "min_snr"]  # every t alike (L_simple), or min-SNR-gamma (Hang et al. 2023)
LearningRateSchedule = Literal["constant", "cosine"]  # after the warm-up
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # the network's arithmetic; "auto" picks by hardware (device.resolve_precision)

PREDICTIONS: tuple[str, ...] = get_args(PredictionTarget)
WEIGHTINGS: tuple[str, ...] = get_args(LossWeighting)
LR_SCHEDULES: tuple[str, ...] = get_args(LearningRateSchedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
ADAPTIVE_THREADS = "adaptive"  # TrainConfig.cpu_threads: one thread fewer while other processes crowd the cores
