"""Training the denoising network: Algorithm 1 of Ho et al. (2020), and the engineering around it.

One step: pick digits x_0, a timestep t ~ U{1..T} and noise eps ~ N(0, I); form
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; regress the network's
output onto its target (objective.py) with a mean-squared error.

Around it: AdamW with a warm-up, gradient clipping, an exponential moving
average (EMA) of the weights that is used for every sample, mixed precision
chosen by hardware, and after every epoch a sample grid from fixed noise, the
loss history, the EMA weights and a checkpoint (each written atomically; a
resumed run continues bit for bit on CPU, and first makes the grids, the loss
history and the EMA file agree with its checkpoint, which a kill between those
writes can leave one epoch behind them). An epoch is one pass over the digits,
whatever the batch size: a run resumed with another batch size counts its
epochs by the digits seen, not by its step number.

On a GPU the whole update is captured once as a CUDA graph and replayed: the
network is small, so launching its few hundred kernels one by one from Python
costs more than running them. The random draws stay outside the graph, so the
graphed and the plain step consume the same random numbers and compute the
same update.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (
    CHECKPOINT_NAME,
    EMA_WEIGHTS_NAME,
    CheckpointError,
    build_model,
    check_training_state,
    checkpoint_state,
    damaged_field,
    epoch_ends,
    read_checkpoint,
    save_weights,
)
from .config import TrainConfig
from .constants import Precision
from .data import load_mnist
from .device import CpuThreads, autocast, resolve_device, resolve_precision
from .objective import diffusion_loss, draw_training_inputs, noise_predictor
from .plots import save_grid
from .runfolder import ExistingRun, NoRunToResume, RunLock, atomic_write, check_writable, config_differences, remove_stale_temporaries
from .sampling import Guidance, balanced_labels, ddim_sample
from .schedule import NoiseSchedule

LOSS_READ_EVERY = 20  # steps between copies of the losses to the host: each copy waits for the GPU
# An epoch's batch order is seeded with seed * EPOCH_SEED_STRIDE + epoch: more than any run's epochs, so
# that two seeds never share an epoch's order. Changing it changes the batches of every run and resume.
EPOCH_SEED_STRIDE = 100_003
GRID_NAME = re.compile(r"^epoch_(\d+)\.png$")  # epoch_001.png: the EMA model's digits after epoch 1


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with d ramped up early in training.

    The ramp d_k = min(decay, (1 + k) / (warmup + k)) lets the average follow the
    fast-changing first steps instead of remembering the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: int):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (self.warmup + step))

    @torch.no_grad()
    def update(self, model: nn.Module, weight):
        """theta_ema += weight * (theta - theta_ema), weight = 1 - d (a float, or a 0-d tensor for a CUDA graph)."""
        averaged = list(self.model.parameters())
        # Three foreach calls rather than one lerp: lerp takes its weight as a Python number, and reading a
        # tensor's value would stall a CUDA graph.
        step = torch._foreach_sub(list(model.parameters()), averaged)
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(averaged, step)


@dataclass
class TrainResult:
    model: nn.Module  # the raw weights
    ema_model: nn.Module  # the averaged weights, as a noise predictor: sample with these
    schedule: NoiseSchedule
    losses: list[float]  # one per optimisation step, over all epochs including resumed ones
    epochs_done: int  # finished passes over the training digits
    steps_done: int
    out_dir: Path | None
    precision: Precision  # as resolved for the device: fp32, bf16 or fp16
    device: torch.device
    train_seconds: float  # time spent in optimisation steps by this call (grids and checkpoints excluded)
    graphed: bool  # whether the steps ran as a CUDA graph


class Trainer:
    """A model, its optimizer, EMA and data, and the one training step; ``fit`` runs the epochs.

    ``out_dir=None`` in the config trains without writing anything (benchmarks, experiments).
    ``loss_function`` computes each step's loss, with ``diffusion_loss``'s signature (model, schedule, x0, t,
    noise, labels, objective); None means ``diffusion_loss``, looked up at each step. Another one (a student's,
    notebook 02) trains on the same batches and draws.
    """

    def __init__(
        self,
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        allow_changes: bool = False,
        loss_function: Callable[..., torch.Tensor] | None = None,
    ):
        self.config = config
        self.loss_function = loss_function
        self.progress = progress
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.amp, self.device)
        self.threads = CpuThreads(self.device, config.cpu_threads)
        self.objective = config.objective()
        self.out_dir = Path(config.out_dir) if config.out_dir else None

        with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's RNG alone
            torch.manual_seed(config.seed)
            self.model = build_model(config, self.device)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup)
        self.schedule = NoiseSchedule(config.schedule, config.timesteps).to(self.device)
        on_gpu = self.device.type == "cuda"
        # fused: one kernel for the whole AdamW update; capturable: its step count lives on the GPU, as a graph needs.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, fused=on_gpu or None, capturable=on_gpu)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.noise_generator = torch.Generator(self.device).manual_seed(config.seed)
        self.step, self.losses = 0, []
        self.epoch_ends: list[int] = []  # the step count at the end of each finished epoch
        self._order_epoch, self._order = None, None
        self.history = []  # settings changed on resume, with the step they took effect
        self.resumed = resume
        if resume:
            self._restore(allow_changes)

        if images is None:
            images, labels = load_mnist(config.data_root, train=True, subset=config.train_subset)
        self.images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        self.labels = labels.to(self.device) if config.model.num_classes else None
        self.steps_per_epoch = self.images.shape[0] // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size ({config.batch_size}) must not exceed the number of training digits ({self.images.shape[0]})")
        # The steps planned when this run (or its resumption) started: those done, and the epochs still to do at this batch size.
        self.total_steps = self.epoch_start + (config.epochs - self.epoch) * self.steps_per_epoch
        self._graph = _record_graph(self) if on_gpu and config.cuda_graphs else None

    # ----- the step -------------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr``, then constant or a cosine decay that would reach 0 one step after the last planned one."""
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.lr_schedule == "constant":
            return c.lr
        progress = (step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps)
        return c.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def update(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor | None, ema_weight) -> torch.Tensor:
        """The deterministic part of a step: loss under autocast, scaled backward, clipping, AdamW, EMA.

        The CUDA graph records exactly this function; its learning rate and EMA weight are read from
        tensors the trainer fills before each replay.
        """
        with autocast(self.device, self.precision, cache_casts=False):
            loss_function = self.loss_function or diffusion_loss
            loss = loss_function(self.model, self.schedule, x0, t, noise, labels, self.objective)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model, ema_weight)
        return loss.detach()

    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        """One optimisation step on the training digits at ``indices``; returns the loss (still on the device)."""
        x0 = self.images[indices]
        labels = None if self.labels is None else self.labels[indices]
        t, noise, labels = draw_training_inputs(
            x0, labels, self.config.timesteps, self.noise_generator, self.config.p_uncond, self.model.null_label,
        )  # fmt: skip
        lr, ema_weight = self.learning_rate(self.step), 1 - self.ema.decay_at(self.step)
        if self._graph is not None:
            loss = self._graph.replay(x0, t, noise, labels, lr, ema_weight)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.update(x0, t, noise, labels, ema_weight)
        self.step += 1
        return loss

    @property
    def epoch(self) -> int:
        """Epochs finished: passes over the training digits, whatever batch size each ran at."""
        return len(self.epoch_ends)

    @property
    def epoch_start(self) -> int:
        """The step at which the epoch under way began."""
        return self.epoch_ends[-1] if self.epoch_ends else 0

    def epoch_order(self, epoch: int) -> torch.Tensor:
        # Depends only on (seed, epoch), so a resumed run sees the same batches.
        generator = torch.Generator().manual_seed(self.config.seed * EPOCH_SEED_STRIDE + epoch)
        return torch.randperm(self.images.shape[0], generator=generator).to(self.device)

    def train_steps(self, count: int) -> float:
        """Run ``count`` more steps (crossing epochs as needed, no files written); return the seconds they took."""
        start = time.perf_counter()
        pending = []
        with self.threads.applied():
            for _ in range(count):
                epoch, b = self.epoch, self.step - self.epoch_start
                if epoch != self._order_epoch:
                    self._order_epoch, self._order = epoch, self.epoch_order(epoch)
                order = self._order
                pending.append(self.train_step(order[b * self.config.batch_size : (b + 1) * self.config.batch_size]))
                if b + 1 == self.steps_per_epoch:
                    self.epoch_ends.append(self.step)
                if len(pending) == LOSS_READ_EVERY:
                    self.losses.extend(torch.stack(pending).tolist())
                    pending = []
                    self.threads.adjust()
            if pending:
                self.losses.extend(torch.stack(pending).tolist())
                self.threads.adjust()
        return time.perf_counter() - start

    @property
    def graphed(self) -> bool:
        return self._graph is not None

    def sampler_model(self) -> nn.Module:
        """The EMA weights as the samplers' eps_theta."""
        return noise_predictor(self.ema.model, self.schedule, self.config.prediction)

    # ----- the run ---------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``config.epochs`` epochs are done, writing grids, losses, EMA weights and a checkpoint after each."""
        from tqdm.auto import tqdm

        seconds = 0.0
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed:
                self._outputs_agree_with_checkpoint()
        for epoch in range(self.epoch, self.config.epochs):
            self.model.train()
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.progress, leave=True)
            while self.epoch == epoch:
                chunk = min(LOSS_READ_EVERY, self.epoch_start + self.steps_per_epoch - self.step)
                seconds += self.train_steps(chunk)
                bar.update(chunk)
                shown = {"threads": self.threads.count} if self.threads.count < self.threads.most else {}  # lowered beside a busy process
                bar.set_postfix(loss=f"{sum(self.losses[-LOSS_READ_EVERY:]) / len(self.losses[-LOSS_READ_EVERY:]):.4f}", **shown)
            bar.close()
            if self.out_dir is not None:
                self._write_epoch_outputs(epoch + 1)
        return TrainResult(
            self.model, self.sampler_model(), self.schedule, self.losses, self.epoch, self.step, self.out_dir, self.precision,
            self.device, seconds, self.graphed,
        )  # fmt: skip

    def _write_grid(self, epoch: int):
        """The EMA model's digits from the run's fixed noise, as ``epoch_NNN.png``."""
        config = self.config
        # Conditional runs draw rows of 0..9 with the plain conditional model (w = 1).
        guidance = Guidance(balanced_labels(config.grid_size)) if config.model.num_classes else None
        with self.threads.applied(), autocast(self.device, self.precision):  # on the threads training uses
            grid = ddim_sample(
                self.sampler_model(), self.schedule, config.grid_size, steps=config.grid_steps, seed=config.seed, guidance=guidance
            ).images
        atomic_write(self.out_dir / f"epoch_{epoch:03d}.png", lambda tmp: save_grid(grid, tmp, nrow=10 if guidance else None))

    def _write_ema_weights(self):
        atomic_write(self.out_dir / EMA_WEIGHTS_NAME, lambda tmp: save_weights(self.ema.model.state_dict(), tmp, asdict(self.config)))

    def _outputs_agree_with_checkpoint(self):
        """After a resume: the EMA file, the loss history and the grids say what the checkpoint says.

        A run killed between its writes of an epoch leaves some of them one epoch ahead of its
        checkpoint, and a folder may have lost or been given one: grids of later epochs are
        removed (training draws them again when it gets there), the checkpoint's own epoch's
        grid is drawn if it is missing, and the loss history and the EMA file are written afresh.
        """
        for path in self.out_dir.iterdir():
            if (match := GRID_NAME.match(path.name)) and int(match.group(1)) > self.epoch:
                path.unlink()
        if not (self.out_dir / f"epoch_{self.epoch:03d}.png").exists():
            self._write_grid(self.epoch)
        _write_losses(self.out_dir / "loss_history.csv", self.losses, self.epoch_ends)
        self._write_ema_weights()

    def _write_epoch_outputs(self, epoch: int):
        config, out = self.config, self.out_dir
        self._write_grid(epoch)
        _write_losses(out / "loss_history.csv", self.losses, self.epoch_ends)
        # The EMA file first: a checkpoint that says "epoch done" always has its EMA weights beside it.
        self._write_ema_weights()
        state = checkpoint_state(
            config,
            model=self.model.state_dict(),
            ema=self.ema.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            step=self.step,
            epoch=epoch,
            epoch_ends=self.epoch_ends,
            losses=torch.tensor(self.losses),
            rng={"noise": self.noise_generator.get_state()},
            history=self.history,
        )
        atomic_write(out / CHECKPOINT_NAME, lambda tmp: torch.save(state, tmp))

    def _restore(self, allow_changes: bool):
        ckpt_path = self.out_dir / CHECKPOINT_NAME
        ckpt = read_checkpoint(ckpt_path)
        check_training_state(ckpt, ckpt_path)
        saved = TrainConfig.from_saved(ckpt["config"])
        changes = config_differences(asdict(saved), asdict(self.config))
        if network := [change for change in changes if change.startswith("model.")]:
            raise CheckpointError(
                f"{ckpt_path} holds another network than requested ({'; '.join(network)}); a resumed run keeps its network, "
                f"even with --allow-changes: resume with the checkpoint's model settings, or start a new run in another out_dir"
            )
        if changes and not allow_changes:
            raise CheckpointError(
                f"{ckpt_path} was trained with other settings ({'; '.join(changes)}); resume with the same settings, "
                f"allow the change explicitly (CLI: --allow-changes), or use another out_dir"
            )
        if self.config.epochs < ckpt["epoch"]:
            raise CheckpointError(
                f"{ckpt_path} has already done {ckpt['epoch']} epochs; ask for at least that many, not {self.config.epochs}"
            )
        self.model.load_state_dict(ckpt["model"])
        self.ema.model.load_state_dict(ckpt["ema"])
        with _loading(ckpt_path, "optimizer", "does not hold AdamW's state for this network"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for p in self.model.parameters():
                if p in self.optimizer.state and any(
                    self.optimizer.state[p][moment].shape != p.shape for moment in ("exp_avg", "exp_avg_sq")
                ):
                    raise ValueError("a moment of another shape than its weight")
            for group in self.optimizer.param_groups:  # how to step is this machine's choice, not the checkpoint's
                group.update(fused=self.device.type == "cuda" or None, capturable=self.device.type == "cuda", lr=float(group["lr"]))
        with _loading(ckpt_path, "scaler", "is not a loss scaler's state"):
            self.scaler.load_state_dict(ckpt["scaler"])
        with _loading(ckpt_path, "rng", f"is not the state of a random-number generator on {self.device.type}"):
            self.noise_generator.set_state(ckpt["rng"]["noise"])
        self.step, self.losses, self.epoch_ends = ckpt["step"], ckpt["losses"].tolist(), epoch_ends(ckpt)
        self.history = list(ckpt.get("history", [])) + ([{"step": self.step, "changes": changes}] if changes else [])


@contextlib.contextmanager
def _loading(path, field: str, problem: str):
    """What loading a checkpoint's ``field`` raises, as its one line."""
    try:
        yield
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise damaged_field(path, field, problem) from exc


def _record_graph(trainer: Trainer) -> _GraphedUpdate | None:
    """``Trainer.update`` as a CUDA graph, or None (with a warning) where recording fails: an old
    driver or torch, an operation that cannot be captured. The plain step then does the work."""
    saved = _snapshot(trainer)
    try:
        return _GraphedUpdate(trainer)
    except (RuntimeError, TypeError) as exc:
        torch.cuda.synchronize(trainer.device)
        for group in trainer.optimizer.param_groups:
            group["lr"] = float(group["lr"])
        warnings.warn(f"CUDA graph capture failed ({exc}); training with the plain step instead", stacklevel=3)
        return None
    finally:
        _restore_in_place(trainer, saved)


class _GraphedUpdate:
    """``Trainer.update`` recorded once as a CUDA graph, replayed with fresh inputs copied into its buffers.

    Recording needs a few warm-up updates (they create the optimizer state and pick the kernels);
    ``_record_graph`` undoes their effect on the weights, the EMA, the optimizer and the loss
    scaler afterwards, in place, so the graphed run is the plain run.
    """

    WARMUP_UPDATES = 3

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        c, device = trainer.config, trainer.device
        n = c.batch_size
        self.x0 = trainer.images[:n].clone()
        self.t = torch.zeros(n, dtype=torch.long, device=device)
        self.noise = torch.zeros_like(self.x0)
        self.labels = None if trainer.labels is None else trainer.labels[:n].clone()
        self.ema_weight = torch.zeros((), device=device)
        for group in trainer.optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)  # read by the fused kernel at each replay

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_UPDATES):
                trainer.optimizer.zero_grad(set_to_none=True)
                trainer.update(self.x0, self.t, self.noise, self.labels, self.ema_weight)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        trainer.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = trainer.update(self.x0, self.t, self.noise, self.labels, self.ema_weight)

    def replay(self, x0, t, noise, labels, lr: float, ema_weight: float) -> torch.Tensor:
        self.x0.copy_(x0)
        self.t.copy_(t)
        self.noise.copy_(noise)
        if labels is not None:
            self.labels.copy_(labels)
        for group in self.trainer.optimizer.param_groups:
            group["lr"].fill_(lr)
        self.ema_weight.fill_(ema_weight)
        self.graph.replay()
        return self.loss.clone()


def _snapshot(trainer: Trainer) -> dict:
    return {
        "model": [p.detach().clone() for p in trainer.model.parameters()],
        "ema": [p.detach().clone() for p in trainer.ema.model.parameters()],
        "optimizer": {id(p): {k: v.clone() for k, v in s.items()} for p, s in trainer.optimizer.state.items()},
        "scaler": trainer.scaler.state_dict(),  # numbers, not tensors: loading them back fills the scaler's tensors in place
    }


@torch.no_grad()
def _restore_in_place(trainer: Trainer, saved: dict):
    """Undo the warm-up updates without moving any tensor the graph recorded."""
    for p, old in zip(trainer.model.parameters(), saved["model"]):
        p.copy_(old)
    for p, old in zip(trainer.ema.model.parameters(), saved["ema"]):
        p.copy_(old)
    for p, state in trainer.optimizer.state.items():
        before = saved["optimizer"].get(id(p))
        for key, value in state.items():
            if torch.is_tensor(value):
                value.copy_(before[key]) if before is not None else value.zero_()
    trainer.scaler.load_state_dict(saved["scaler"])  # a no-op without fp16, where the scaler is off


def _write_losses(path: Path, losses: list[float], epoch_ends: list[int]):
    """loss_history.csv: each step's loss, with the epoch it belongs to (``epoch_ends``: the last step of each)."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "epoch", "loss"])
            epoch = 1
            for step, loss in enumerate(losses, start=1):
                while epoch <= len(epoch_ends) and step > epoch_ends[epoch - 1]:
                    epoch += 1
                writer.writerow([step, epoch, f"{loss:.6f}"])

    atomic_write(path, write)


def train(config: TrainConfig, resume: bool = False, progress: bool = True, allow_changes: bool = False) -> TrainResult:
    """Train for ``config.epochs`` epochs in total, writing everything to ``config.out_dir``.

    With ``resume=True`` the checkpoint there is continued (an epoch count beyond the
    checkpoint's extends the run; any other changed setting is refused unless
    ``allow_changes``, which records it in the checkpoint's history). Without it, an
    existing checkpoint is refused rather than overwritten. One process at a time
    may write a run folder.
    """
    if not config.out_dir:
        raise ValueError(
            f"train writes a run folder, but out_dir is {config.out_dir!r}; give one (to train without writing anything, use Trainer(config).fit())"
        )
    out_dir = Path(config.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    check_writable(ckpt_path)
    with RunLock(out_dir) as lock:
        if lock.note:
            print(lock.note)
        remove_stale_temporaries(out_dir)
        if resume and not ckpt_path.exists():
            raise NoRunToResume(f"resume was asked for, but {ckpt_path} does not exist; drop resume to start a new run there")
        if not resume and ckpt_path.exists():
            raise ExistingRun(
                f"{ckpt_path} already exists. Pass resume=True (CLI: --resume) to continue that run, "
                f"or choose another out_dir; nothing was overwritten."
            )
        return Trainer(config, resume=resume, progress=progress, allow_changes=allow_changes).fit()
