"""Notebook parameters as papermill delivers them, checked and converted in one place.

``papermill -p NAME VALUE`` converts VALUE itself ("3" -> 3, "False" -> False,
"None" -> None, "1e-3" -> 0.001) while ``-r NAME VALUE`` passes the raw string,
and ``-y``/``-f`` pass YAML. A notebook must read all of them the same way; in
particular the string "False" must not count as true. Usage in a notebook,
right after its parameters cell::

    from ddpm_lib import params

    PARAMETERS = {
        "epochs": params.Param(int, minimum=1),
        "resume": params.Param(bool),
        "train_subset": params.Param(int, minimum=1, maximum=60_000, allow_none=True),
        "channels": params.Param(list[int], minimum=1, length=3),
        "schedule": params.Param(str, choices=SCHEDULE_REGISTRY),
    }
    globals().update(params.validate(globals(), PARAMETERS))

Every refusal names the parameter and says what it must be, in one line. A name papermill
was given that the notebook does not have (``-p epoch 5`` for ``epochs``) is refused too,
naming the closest real one: papermill itself only warns and runs with the default.
``validate`` finds those names in the cell papermill injected after the parameters cell,
which IPython keeps in its input history (``_ih`` in ``globals()``): whatever ``-p``,
``-r``, ``-y`` or ``-f`` gave, papermill writes it there as ``name = value`` lines.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from .constants import LR_SCHEDULES, PRECISIONS, PREDICTIONS, TRAINING_DIGITS, WEIGHTINGS
from .schedule import SCHEDULE_REGISTRY

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none",)


class NotebookParameterError(ValueError):
    """One or more notebook parameters that cannot be used as given."""


@dataclass(frozen=True)
class Param:
    """What one parameter must be.

    ``kind`` is int, float, bool, str, list[int] or list[float]. ``minimum``,
    ``maximum`` and ``choices`` apply to the value, or to each item of a list;
    ``choices`` is read when a value is checked, so a registry (``SCHEDULE_REGISTRY``)
    given as the choices also offers what was registered after the spec was written;
    ``length`` fixes a list's length. ``note`` says why, after the rule.
    """

    kind: Any
    allow_none: bool = False
    choices: Collection | None = None
    minimum: float | None = None
    maximum: float | None = None
    length: int | None = None
    note: str = ""

    def __post_init__(self):
        if self.kind not in (int, float, bool, str, list[int], list[float]):
            raise TypeError(f"Param kind must be int, float, bool, str, list[int] or list[float], got {self.kind!r}")

    def parse(self, name: str, value: Any) -> Any:
        """``value`` converted to the parameter's kind, or NotebookParameterError naming ``name``."""
        if self.allow_none and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        try:
            if get_origin(self.kind) is list:
                parsed = [self._check(_convert(self._item_kind(), item)) for item in _split_list(value)]
                if not parsed or (self.length is not None and len(parsed) != self.length):
                    raise ValueError
                return parsed
            return self._check(_convert(self.kind, value))
        except (ValueError, TypeError):
            raise NotebookParameterError(f"{name} must be {self.describe()}, got {value!r}") from None

    def describe(self) -> str:
        """The rule in words, e.g. "a whole number, from 1 to 1000" or "a list of 3 whole numbers, each at least 1"."""
        bounds = _bounds_words(self.minimum, self.maximum)
        if get_origin(self.kind) is list:
            items = _PLURAL[self._item_kind()]
            rule = f"a list of {self.length} {items}" if self.length else f"a non-empty list of {items}"
            rule += f", each {bounds}" if bounds else ""
        elif self.choices is not None:
            rule = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            rule = _KIND_WORDS[self.kind] + (f", {bounds}" if bounds else "")
        if self.allow_none:
            rule += ", or None"
        return rule + (f" ({self.note})" if self.note else "")

    def _item_kind(self):
        return get_args(self.kind)[0] if get_origin(self.kind) is list else self.kind

    def _check(self, value):
        if self.choices is not None and value not in self.choices:
            raise ValueError
        if self.minimum is not None and value < self.minimum:
            raise ValueError
        if self.maximum is not None and value > self.maximum:
            raise ValueError
        return value


_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false (also yes/no, 1/0)", str: "text"}
_PLURAL = {int: "whole numbers", float: "numbers"}


def _bounds_words(minimum, maximum) -> str:
    def show(x):
        return str(x) if isinstance(x, int) else f"{x:g}"

    if minimum is not None and maximum is not None:
        return f"from {show(minimum)} to {show(maximum)}"
    if minimum is not None:
        return f"at least {show(minimum)}"
    if maximum is not None:
        return f"at most {show(maximum)}"
    return ""


def _convert(kind, value):
    """``value`` as ``kind``, accepting what papermill's -p, -r and YAML can deliver; ValueError if it is not one."""
    if kind is bool:
        return _as_bool(value)
    if isinstance(value, bool):  # True is an int to Python, but never a number or text a user meant
        raise ValueError
    if kind is int:
        if isinstance(value, str):
            text = value.strip()
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():  # 3.0 from YAML or "3.0" is still three
            return int(value)
        raise ValueError  # 1.5, "1.5", inf, nan, lists: not whole numbers
    if kind is float:
        number = float(value.strip()) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError
        return float(number)
    # str: -p turns an all-digit path or name into a number; take it back as the text that was typed.
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # what -p makes of "1" and "0"
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError


def _split_list(value) -> list:
    """Items of a list, of "[16, 32, 64]", "16,32,64" or "16 32 64", or of a single value (one item)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        inside = value.strip()
        if inside[:1] in "[(" and inside[-1:] in "])":
            inside = inside[1:-1]
        return [item for item in re.split(r"[,\s]+", inside) if item]
    return [value]


def parse_param(name: str, value: Any, kind, **rules) -> Any:
    """One parameter: ``parse_param("epochs", "3", int, minimum=1)`` -> 3. Rules as for ``Param``."""
    return Param(kind, **rules).parse(name, value)


PAPERMILL_HEADER = "# Parameters"  # the first line of the cell papermill injects after the parameters cell


def _assigned_names(source: str) -> list[str]:
    """The names a cell's top-level statements assign (``x = 1`` or ``x: int = 1``), in order; none if it is not plain Python."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython's magics and shell escapes
        return []
    names = []
    for node in body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [target.id for target in targets if isinstance(target, ast.Name)]
    return list(dict.fromkeys(names))


def injected_names(values: Mapping[str, Any], spec: Mapping[str, Param]) -> list[str]:
    """The names papermill's injected cell assigned before this cell ran, in their order; [] when none was.

    ``values`` is the notebook's ``globals()``, whose ``_ih`` is IPython's input history (the
    cell now running last). Going back from the cell before this one, the first cell that is
    papermill's (its first line ``PAPERMILL_HEADER``) gave the names; a cell that assigns every
    parameter of ``spec`` first is the notebook's own parameters cell, run again since (or run
    without papermill): nothing was injected after it. Outside IPython there is no history.
    """
    history = values.get("_ih")
    if not isinstance(history, list):
        return []
    for source in reversed(history[:-1]):
        if not isinstance(source, str):
            continue
        if source.lstrip().splitlines()[:1] == [PAPERMILL_HEADER]:
            return _assigned_names(source)
        if set(spec) <= set(_assigned_names(source)):
            return []
    return []


def _unknown(name: str, spec: Mapping[str, Param]) -> str:
    closest = difflib.get_close_matches(name, list(spec), n=1)
    hint = f"did you mean {closest[0]}?" if closest else f"it has {', '.join(spec)}"
    return f"{name} is not a parameter of this notebook ({hint})"


def validate(values: Mapping[str, Any], spec: Mapping[str, Param]) -> dict[str, Any]:
    """Every parameter of ``spec`` taken from ``values`` (e.g. ``globals()``) and converted.

    A name papermill was given that ``spec`` does not have is refused (``injected_names``).
    All problems are reported together, as one NotebookParameterError of one line.
    """
    clean = {}
    problems = [_unknown(name, spec) for name in injected_names(values, spec) if name not in spec]
    for name, param in spec.items():
        if name not in values:
            problems.append(f"{name} is missing (it must be {param.describe()})")
            continue
        try:
            clean[name] = param.parse(name, values[name])
        except NotebookParameterError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise NotebookParameterError(problems[0])
    if problems:
        raise NotebookParameterError(f"{len(problems)} parameters need changing: " + "; ".join(problems))
    return clean


# Notebook 02's parameters (its papermill "parameters" cell documents each one).
TRAINING_NOTEBOOK = {
    "epochs": Param(int, minimum=1),
    "batch_size": Param(int, minimum=1),
    "lr": Param(float, minimum=1e-8),
    "lr_schedule": Param(str, choices=LR_SCHEDULES),
    "warmup_steps": Param(int, minimum=0),
    "prediction": Param(str, choices=PREDICTIONS),
    "loss_weighting": Param(str, choices=WEIGHTINGS),
    "schedule": Param(str, choices=SCHEDULE_REGISTRY),
    "channels": Param(list[int], minimum=8, length=3),
    "ema_decay": Param(float, minimum=0, maximum=0.99999),
    "train_subset": Param(int, minimum=1, maximum=TRAINING_DIGITS, allow_none=True),
    "device": Param(str),
    "amp": Param(str, choices=PRECISIONS),
    "out_dir": Param(str),
    "resume": Param(bool),
    "seed": Param(int, minimum=0),
    "n_evaluate": Param(int, minimum=200, note="the classifier-FID needs more digits than its 128 features"),
    "ablation_steps": Param(int, minimum=1),
}

# Notebook 03's parameters (its papermill "parameters" cell documents each one). A checkpoint
# path and the device are checked where they are used: load_model names a missing or unreadable
# file, and resolve_device a device that is not there.
SAMPLING_NOTEBOOK = {
    "checkpoint": Param(str, allow_none=True),
    "device": Param(str),
    "n_samples": Param(int, minimum=8, maximum=64, note="section 3 takes eight of them as codes; a DDPM run keeps 9 MB per digit"),
    "seed": Param(int, minimum=0),
    "gif_path": Param(str),
}


# Notebook 04's parameters (its papermill "parameters" cell documents each one): the shipped model it studies,
# the small conditional model the student trains in it, and the measured curves.
GUIDANCE_NOTEBOOK = {
    "checkpoint": Param(str, allow_none=True),
    "device": Param(str),
    "seed": Param(int, minimum=0),
    "train_epochs": Param(int, minimum=1),
    "train_subset": Param(int, minimum=1, maximum=TRAINING_DIGITS, allow_none=True),
    "train_batch_size": Param(int, minimum=1),
    "train_lr": Param(float, minimum=1e-8),
    "train_loss_weighting": Param(str, choices=WEIGHTINGS),
    "train_channels": Param(list[int], minimum=8, length=3),
    "train_out_dir": Param(str),
    "n_per_point": Param(int, minimum=200, note="the classifier-FID needs more digits than its 128 features"),
    "guidance_weights": Param(list[float], minimum=0),
    "guidance_steps": Param(int, minimum=1, maximum=1000),
    "step_counts": Param(list[int], minimum=1, maximum=1000),
    "guidance_for_steps": Param(float, minimum=0),
    "include_ddpm": Param(bool),
}


# The course's notebooks (notebooks/NAME.ipynb) in the order they are taught, each with the spec of its parameters
# cell ({} for a notebook without one). `make run` runs them in this order; the tests check that it names every
# notebook in notebooks/, and that papermill documents every parameter of each spec.
COURSE = {
    "01_forward_noising": {},
    "02_training": TRAINING_NOTEBOOK,
    "03_reverse_sampling": SAMPLING_NOTEBOOK,
    "04_guidance_and_fast_sampling": GUIDANCE_NOTEBOOK,
}
