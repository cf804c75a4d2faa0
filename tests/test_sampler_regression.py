"""The samplers give the same digits, bit for bit, as the two sampling loops they replaced.

The oracle below is the library's DDPM and DDIM code as it stood before the samplers became step
functions run by one shared loop: the two loops, the guided noise prediction, the clipping, the
noise draws and the trajectory recorder, copied verbatim. It is kept only as the regression oracle
and is not used anywhere else. It reads nothing of ``ddpm_lib.sampling``; it uses ``NoiseSchedule``'s
closed forms (``predict_x0``, ``predict_noise``, ``posterior``), which the change left alone.

Why an oracle in code rather than a file of recorded outputs: a file of floats made by a
convolutional network on one CPU can differ in the last bit on another (oneDNN picks its kernels by
CPU; an Intel and an AMD machine sum in different orders), so a recording would fail on machines where
nothing is wrong. Running the oracle and the library in the same process, on the same machine and
inputs, makes exact equality (``torch.equal``) the right test: any reordering of the arithmetic or of
the random draws shows, and nothing else does.

The networks: the conftest's tiny SimpleUNet, its zero-initialised output layer made random (with a
zero output every noise guess would be 0 and the test would miss a network misused), unconditional and
class-conditional; the conftest's T = 50 linear schedule, and a cosine one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from conftest import SAMPLER_TEST_T, TINY_MODEL
from torch import nn

from ddpm_lib.sampling import Guidance, ddim_sample, ddpm_sample, sample, sample_many
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.unet import SimpleUNet

# ----------------------------------------------------------------------------------------------------
# The pre-refactor implementation, kept only as the regression oracle (verbatim but for the names,
# which carry an ``oracle_`` prefix, and the dataclasses, which are replaced by plain tuples).


def oracle_guided_noise(model, x_t, t_batch, guidance):
    if guidance is None:
        return model(x_t, t_batch).float()
    labels = guidance.labels.to(x_t.device)
    w = guidance.weight
    nothing = torch.full_like(labels, model.null_label)
    if w == 0:
        return model(x_t, t_batch, nothing).float()
    if w == 1:
        return model(x_t, t_batch, labels).float()
    both = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([labels, nothing])).float()
    eps_label, eps_nothing = both.chunk(2)
    return eps_nothing + w * (eps_label - eps_nothing)


def oracle_predict(model, schedule, x_t, t, clip_x0, guidance=None):
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    noise_pred = oracle_guided_noise(model, x_t, t_batch, guidance)
    x0_pred = schedule.predict_x0(x_t, t_batch, noise_pred)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1, 1)
        noise_pred = schedule.predict_noise(x_t, t_batch, x0_pred)
    return noise_pred, x0_pred


def oracle_noise_like(shape, generator, device):
    return torch.randn(shape, generator=generator).to(device)


class OracleRecorder:
    def __init__(self, enabled):
        self.enabled = enabled
        self.rows = []

    def add(self, t, x_t, x0_pred, noise_pred):
        if self.enabled:
            self.rows.append((t, x_t.float().cpu(), x0_pred.float().cpu(), noise_pred.float().cpu()))

    def result(self, images):
        if not self.enabled:
            return images, None
        t, x, x0, eps = zip(*self.rows)
        return images, (list(t), torch.stack(x), torch.stack(x0), torch.stack(eps))


@torch.no_grad()
def oracle_ddpm_sample(model, schedule, n, seed=0, clip_x0=True, return_trajectory=False, x_T=None, guidance=None):
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = oracle_noise_like((n, 1, 28, 28), generator, device) if x_T is None else x_T.to(device)
    recorder = OracleRecorder(return_trajectory)
    for t in reversed(range(schedule.timesteps)):
        noise_pred, x0_pred = oracle_predict(model, schedule, x, t, clip_x0, guidance)
        recorder.add(t, x, x0_pred, noise_pred)
        t_batch = torch.full((n,), t, device=device, dtype=torch.long)
        mean, variance = schedule.posterior(x0_pred, x, t_batch)
        z = oracle_noise_like(x.shape, generator, device) if t > 0 else torch.zeros_like(x)
        x = mean + variance.sqrt() * z
    return recorder.result(x.clamp(-1, 1))


def oracle_ddim_timesteps(total, steps):
    if steps == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


@torch.no_grad()
def oracle_ddim_sample(model, schedule, n, steps=50, eta=0.0, seed=0, clip_x0=True, return_trajectory=False, x_T=None, guidance=None):
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = oracle_noise_like((n, 1, 28, 28), generator, device) if x_T is None else x_T.to(device)
    recorder = OracleRecorder(return_trajectory)
    visited = oracle_ddim_timesteps(schedule.timesteps, steps)
    for i, t in enumerate(visited):
        noise_pred, x0_pred = oracle_predict(model, schedule, x, t, clip_x0, guidance)
        recorder.add(t, x, x0_pred, noise_pred)
        alpha_bar = schedule.alpha_bars[t]
        alpha_bar_prev = schedule.alpha_bars[visited[i + 1]] if i + 1 < len(visited) else torch.ones_like(alpha_bar)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * noise_pred
        x = alpha_bar_prev.sqrt() * x0_pred + direction
        if eta > 0 and i + 1 < len(visited):
            x = x + sigma * oracle_noise_like(x.shape, generator, device)
    return recorder.result(x.clamp(-1, 1))


# ----------------------------------------------------------------------------------------------------


def random_output_network(conditional: bool) -> SimpleUNet:
    """The conftest's tiny network with a random output layer (the library starts it at zero)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = SimpleUNet(replace(TINY_MODEL, num_classes=10 if conditional else 0))
        nn.init.normal_(network.conv_out.weight, std=0.1)
        nn.init.normal_(network.conv_out.bias, std=0.1)
    return network.eval()


@pytest.fixture(scope="module")
def unconditional() -> SimpleUNet:
    return random_output_network(conditional=False)


@pytest.fixture(scope="module")
def conditional() -> SimpleUNet:
    return random_output_network(conditional=True)


TEST_SCHEDULES = {kind: NoiseSchedule(kind, SAMPLER_TEST_T) for kind in ("linear", "cosine")}


@dataclass(frozen=True)
class Run:
    """One configuration: which sampler, with which settings; ``labels`` and ``w`` ask for guidance."""

    sampler: str
    steps: int = 10
    eta: float = 0.0
    clip_x0: bool = True
    seed: int = 0
    n: int = 3
    schedule: str = "linear"
    labels: tuple[int, ...] | None = None
    w: float = 1.0
    fixed_x_T: bool = False

    def __str__(self) -> str:
        default = Run(self.sampler)
        return "-".join([self.sampler, *(f"{key}={value}" for key, value in vars(self).items() if value != getattr(default, key))])


RUNS = [
    Run("ddpm"),
    Run("ddpm", clip_x0=False, seed=5, schedule="cosine"),
    Run("ddpm", fixed_x_T=True),
    Run("ddim"),
    Run("ddim", clip_x0=False, seed=2, schedule="cosine"),
    Run("ddim", eta=1.0),
    Run("ddim", eta=1.0, clip_x0=False, seed=7),
    Run("ddim", eta=0.5, steps=7, schedule="cosine"),
    Run("ddim", steps=1),
    Run("ddim", steps=SAMPLER_TEST_T, eta=1.0),
    Run("ddim", eta=1.0, fixed_x_T=True, seed=3),
    Run("ddpm", labels=(0, 3, 9), w=2.0),
    Run("ddim", labels=(1, 1, 8), w=2.5, eta=1.0, seed=4),
    Run("ddim", labels=(2, 5, 6), w=0.0, clip_x0=False),
    Run("ddim", labels=(2, 5, 6), w=1.0, steps=4),
]


def inputs_of(run: Run, unconditional, conditional):
    model = unconditional if run.labels is None else conditional
    guidance = None if run.labels is None else Guidance(torch.tensor(run.labels), run.w)
    x_T = torch.randn((run.n, 1, 28, 28), generator=torch.Generator().manual_seed(99)) * 1.5 if run.fixed_x_T else None
    return model, TEST_SCHEDULES[run.schedule], guidance, x_T


def oracle(run: Run, model, schedule, guidance, x_T):
    common = dict(seed=run.seed, clip_x0=run.clip_x0, return_trajectory=True, x_T=x_T, guidance=guidance)
    if run.sampler == "ddpm":
        return oracle_ddpm_sample(model, schedule, run.n, **common)
    return oracle_ddim_sample(model, schedule, run.n, steps=run.steps, eta=run.eta, **common)


def assert_identical(result, expected):
    images, (timesteps, x_t, x0_pred, noise_pred) = expected
    assert torch.equal(result.images, images)
    assert result.trajectory.timesteps == timesteps
    assert torch.equal(result.trajectory.x_t, x_t)
    assert torch.equal(result.trajectory.x0_pred, x0_pred)
    assert torch.equal(result.trajectory.noise_pred, noise_pred)


@pytest.mark.parametrize("run", RUNS, ids=str)
def test_sample_by_name_is_bit_identical_to_the_pre_refactor_loops(run, unconditional, conditional):
    model, schedule, guidance, x_T = inputs_of(run, unconditional, conditional)
    expected = oracle(run, model, schedule, guidance, x_T)
    result = sample(model, schedule, run.n, run.sampler, run.steps, run.seed, eta=run.eta, clip_x0=run.clip_x0,
                    return_trajectory=True, x_T=x_T, guidance=guidance)  # fmt: skip
    assert_identical(result, expected)


@pytest.mark.parametrize("run", [run for run in RUNS if run.labels is None], ids=str)
def test_the_public_wrappers_are_bit_identical_too(run, unconditional, conditional):
    model, schedule, guidance, x_T = inputs_of(run, unconditional, conditional)
    expected = oracle(run, model, schedule, guidance, x_T)
    common = dict(seed=run.seed, clip_x0=run.clip_x0, return_trajectory=True, x_T=x_T)
    if run.sampler == "ddpm":
        result = ddpm_sample(model, schedule, run.n, **common)
    else:
        result = ddim_sample(model, schedule, run.n, steps=run.steps, eta=run.eta, **common)
    assert_identical(result, expected)


@pytest.mark.parametrize("sampler, eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_sample_many_is_bit_identical_batch_by_batch(sampler, eta, unconditional):
    schedule = TEST_SCHEDULES["linear"]
    images = sample_many(unconditional, schedule, 5, sampler, steps=6, seed=11, eta=eta, batch_size=2)
    run = oracle_ddpm_sample if sampler == "ddpm" else lambda *a, **k: oracle_ddim_sample(*a, steps=6, eta=eta, **k)
    expected = torch.cat([run(unconditional, schedule, size, seed=11 + k)[0] for k, size in enumerate((2, 2, 1))])
    assert torch.equal(images, expected)
