"""Class conditioning and classifier-free guidance, checked against references built here.

References, none of them the code under test run a second time:
- the label embedding is added to the timestep embedding, so a conditional
  model fed label y must equal an unconditional twin (same weights) whose last
  time-MLP bias is shifted by label_emb[y];
- guidance: eps_null + w (eps_y - eps_null) from two separate model calls, in float64;
  predict's x0 from the betas in Python floats;
- guided samplers: the unguided sampler run on a wrapper module that fixes the
  labels (w = 1) or does the guidance arithmetic itself (w = 2.5);
- sample_many: each batch against a direct sampler call with seed + k and its slice of labels;
- label dropping: a spy sees every label, and the hidden fraction is within a
  binomial tolerance of p_uncond;
- requested accuracy: a Python loop over (predicted, requested) pairs, with a
  stand-in classifier whose predictions are known by construction;
- the trainer feeds each digit its own MNIST label (looked up by image bytes);
- CLI and shipped weights: exit codes, messages, labels in the .npz, and the CLI's
  images equal to the Python API's.
Tiny models (widths 8, 16, 16) keep everything in seconds on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import ddpm_lib.trainer as trainer_module
from ddpm_lib import evaluation
from ddpm_lib.checkpoint import CheckpointError, load_checkpoint, load_model, read_checkpoint, save_weights
from ddpm_lib.config import TrainConfig
from ddpm_lib.data import load_mnist
from ddpm_lib.metrics import DigitClassifier, classify, evaluate_images, gaussian_stats
from ddpm_lib.objective import diffusion_loss, draw_training_inputs
from ddpm_lib.plots import to_uint8
from ddpm_lib.sampling import (
    Guidance,
    balanced_labels,
    ddim_sample,
    ddpm_sample,
    guided_noise,
    predict,
    sample,
    sample_many,
)
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.trainer import train
from ddpm_lib.unet import SimpleUNet, UNetConfig

UNCOND = UNetConfig(channels=(8, 16, 16), attention=True)
COND = replace(UNCOND, num_classes=10)
TOL = dict(rtol=1e-5, atol=1e-5)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_model(config: UNetConfig = COND, seed: int = 0) -> SimpleUNet:
    """A model with every weight random, conv_out included (the library zero-initialises it)."""
    torch.manual_seed(seed)
    model = SimpleUNet(config)
    nn.init.normal_(model.conv_out.weight, std=0.1)
    nn.init.normal_(model.conv_out.bias, std=0.1)
    return model.eval()


def inputs(n: int, seed: int = 1, T: int = 1000):
    g = gen(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, T, (n,), generator=g)


class FixedLabels(nn.Module):
    """An 'unconditional' model: the conditional one with the labels baked in."""

    def __init__(self, model: nn.Module, labels: torch.Tensor):
        super().__init__()
        self.model, self.labels = model, labels

    def forward(self, x, t):
        return self.model(x, t, self.labels)


class GuidedByHand(nn.Module):
    """eps_null + w (eps_y - eps_null) from two separate calls, in float64."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, w: float):
        super().__init__()
        self.model, self.labels, self.w = model, labels, w

    def forward(self, x, t):
        null = torch.full_like(self.labels, 10)
        eps_y, eps_null = self.model(x, t, self.labels).double(), self.model(x, t, null).double()
        return (eps_null + self.w * (eps_y - eps_null)).float()


# ---------------------------------------------------------------------- UNet


def test_conditional_model_has_a_row_per_label_plus_the_null_token():
    model = SimpleUNet(COND)
    assert model.conditional and model.null_label == 10
    assert tuple(model.label_emb.weight.shape) == (11, model.emb_dim)
    unconditional = SimpleUNet(UNCOND)
    assert not unconditional.conditional and not hasattr(unconditional, "label_emb")


def test_no_labels_means_the_null_token_for_all():
    model = random_model()
    x, t = inputs(4)
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t, torch.full((4,), model.null_label)))


def test_labels_enter_as_a_shift_of_the_time_embedding():
    """Conditional output for label y == an unconditional twin with time_mlp's last bias += label_emb[y]."""
    model = random_model()
    x, t = inputs(3)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("label_emb")}
    for y in (0, 7, model.null_label):
        twin = SimpleUNet(UNCOND).eval()
        twin.load_state_dict(state)
        with torch.no_grad():
            twin.time_mlp[2].bias += model.label_emb.weight[y]
            torch.testing.assert_close(model(x, t, torch.full((3,), y)), twin(x, t), **TOL)


def test_different_labels_give_different_outputs_and_do_not_mix_across_the_batch():
    model = random_model()
    x, t = inputs(1)
    x, t = x.expand(11, -1, -1, -1), t.expand(11)
    labels = torch.arange(11)  # 0..9 and the null label, same image and timestep
    with torch.no_grad():
        out = model(x, t, labels)
        for i in range(11):
            for j in range(i):
                assert (out[i] - out[j]).abs().max() > 1e-3, (i, j)
        # Each row depends on its own label only: one call per sample gives the same rows.
        xs, ts = inputs(5)
        mixed = torch.tensor([3, 10, 3, 0, 9])
        together = model(xs, ts, mixed)
        for i in range(5):
            torch.testing.assert_close(together[i : i + 1], model(xs[i : i + 1], ts[i : i + 1], mixed[i : i + 1]), **TOL)


def test_unconditional_model_refuses_labels():
    model = random_model(UNCOND)
    x, t = inputs(2)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.tensor([1, 2]))


def test_negative_num_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes"):
        UNetConfig(num_classes=-1)


# ----------------------------------------------------- guided_noise, predict


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 0.3])
def test_guided_noise_is_the_guidance_formula(w):
    model = random_model()
    x, t = inputs(5)
    labels = torch.tensor([0, 3, 9, 3, 5])
    with torch.no_grad():
        eps_y = model(x, t, labels).double()
        eps_null = model(x, t, torch.full((5,), 10)).double()
        got = guided_noise(model, x, t, Guidance(labels, w))
    expected = eps_null + w * (eps_y - eps_null)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, **TOL)
    if w == 0:
        torch.testing.assert_close(got.double(), eps_null, **TOL)
    if w == 1:
        torch.testing.assert_close(got.double(), eps_y, **TOL)


def test_guided_noise_without_guidance_is_the_null_prediction():
    model = random_model()
    x, t = inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(guided_noise(model, x, t, None), model(x, t, torch.full((3,), 10)), **TOL)


def test_predict_with_guidance_against_the_closed_form():
    """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), abar_t a product of (1 - beta) in Python floats."""
    T, t = 50, 17
    schedule = NoiseSchedule("linear", T)
    abar = math.prod(1 - b for b in schedule.betas.double().tolist()[: t + 1])
    model = random_model()
    x, _ = inputs(4)
    labels = torch.tensor([1, 1, 8, 2])
    t_batch = torch.full((4,), t)
    with torch.no_grad():
        eps_y, eps_null = model(x, t_batch, labels).double(), model(x, t_batch, torch.full((4,), 10)).double()
        noise, x0 = predict(model, schedule, x, t, clip_x0=False, guidance=Guidance(labels, 2.5))
    eps = eps_null + 2.5 * (eps_y - eps_null)
    torch.testing.assert_close(noise.double(), eps, **TOL)
    torch.testing.assert_close(x0.double(), (x.double() - math.sqrt(1 - abar) * eps) / math.sqrt(abar), rtol=1e-4, atol=1e-4)


def test_guidance_bad_requests_are_value_errors():
    model = random_model()
    x, t = inputs(3)
    with pytest.raises(ValueError, match="2 labels for 3 samples"):
        guided_noise(model, x, t, Guidance(torch.tensor([1, 2]), 2.0))
    with pytest.raises(ValueError, match="conditional"):
        guided_noise(random_model(UNCOND), x, t, Guidance(torch.tensor([1, 2, 3]), 2.0))
    with pytest.raises(ValueError, match=">= 0"):
        Guidance(torch.tensor([1]), weight=-1)
    with pytest.raises(ValueError, match=">= 0"):
        Guidance(torch.tensor([1]), weight=float("nan"))


# ------------------------------------------------------------------ samplers


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_guidance_weight_one_is_ddim_of_the_model_with_labels_fixed(eta):
    model, schedule = random_model(), NoiseSchedule("linear", 50)
    labels = torch.tensor([4, 0, 7])
    guided = ddim_sample(model, schedule, 3, steps=5, eta=eta, seed=11, guidance=Guidance(labels, 1.0), return_trajectory=True)
    fixed = ddim_sample(FixedLabels(model, labels), schedule, 3, steps=5, eta=eta, seed=11, return_trajectory=True)
    torch.testing.assert_close(guided.images, fixed.images, rtol=0, atol=0)
    torch.testing.assert_close(guided.trajectory.noise_pred, fixed.trajectory.noise_pred, rtol=0, atol=0)
    # And the label matters: another label set gives other digits from the same noise.
    other = ddim_sample(model, schedule, 3, steps=5, eta=eta, seed=11, guidance=Guidance(torch.tensor([5, 5, 5]), 1.0))
    assert (other.images - guided.images).abs().max() > 1e-3


def test_ddpm_with_guidance_weight_one_is_ddpm_of_the_model_with_labels_fixed():
    model, schedule = random_model(), NoiseSchedule("cosine", 8)
    labels = torch.tensor([2, 9])
    guided = ddpm_sample(model, schedule, 2, seed=5, guidance=Guidance(labels, 1.0))
    fixed = ddpm_sample(FixedLabels(model, labels), schedule, 2, seed=5)
    torch.testing.assert_close(guided.images, fixed.images, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_guided_sampling_matches_guidance_done_by_hand(sampler):
    model, schedule = random_model(), NoiseSchedule("linear", 10)
    labels = torch.tensor([6, 1, 6])
    kwargs = dict(seed=2, clip_x0=False) | ({"steps": 4, "eta": 0.5} if sampler == "ddim" else {})
    run = ddim_sample if sampler == "ddim" else ddpm_sample
    guided = run(model, schedule, 3, guidance=Guidance(labels, 2.5), **kwargs)
    by_hand = run(GuidedByHand(model, labels, 2.5), schedule, 3, **kwargs)
    torch.testing.assert_close(guided.images, by_hand.images, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_many_splits_labels_and_seeds_by_batch(sampler):
    model, schedule = random_model(), NoiseSchedule("cosine", 6)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    many = sample_many(model, schedule, 7, sampler, steps=3, seed=20, batch_size=3, guidance=Guidance(labels, 2.0))
    assert many.shape == (7, 1, 28, 28)
    for k, (start, stop) in enumerate([(0, 3), (3, 6), (6, 7)]):
        part = Guidance(labels[start:stop], 2.0)
        if sampler == "ddim":
            direct = ddim_sample(model, schedule, stop - start, steps=3, eta=0.0, seed=20 + k, guidance=part)
        else:
            direct = ddpm_sample(model, schedule, stop - start, seed=20 + k, guidance=part)
        torch.testing.assert_close(many[start:stop], direct.images, rtol=0, atol=0)
        same_by_dispatch = sample(model, schedule, stop - start, sampler, 3, seed=20 + k, guidance=part).images
        torch.testing.assert_close(many[start:stop], same_by_dispatch, rtol=0, atol=0)


@pytest.mark.parametrize("count", [4, 7])
def test_sample_many_needs_one_label_per_digit(count):
    model, schedule = random_model(), NoiseSchedule("cosine", 6)
    with pytest.raises(ValueError, match="labels for n = 5"):
        sample_many(model, schedule, 5, "ddim", steps=2, batch_size=3, guidance=Guidance(torch.arange(count) % 10, 2.0))


def test_balanced_labels_cycle_through_the_digits():
    assert balanced_labels(23).tolist() == [i % 10 for i in range(23)]


# ------------------------------------------------------------ label dropping


class LabelSpy(nn.Module):
    """Records the labels the loss hands to a conditional SimpleUNet, and passes them on."""

    def __init__(self, inner: SimpleUNet, run_inner: bool = True):
        super().__init__()
        self.inner, self.run_inner = inner, run_inner
        self.seen: list[torch.Tensor] = []

    @property
    def null_label(self) -> int:
        return self.inner.null_label

    def forward(self, x, t, labels=None):
        self.seen.append(None if labels is None else labels.clone())
        # Skipping the network (only the labels are under test) keeps thousands of draws fast.
        return self.inner(x, t, labels) if self.run_inner else torch.zeros_like(x)


def spy_losses(p_uncond: float, labels: torch.Tensor, calls: int = 1, seed: int = 0, run_inner: bool = True) -> torch.Tensor:
    spy, schedule, g = LabelSpy(SimpleUNet(COND), run_inner), NoiseSchedule("linear", 50), gen(seed)
    x0 = torch.rand(len(labels), 1, 28, 28, generator=gen(seed + 1)) * 2 - 1
    with torch.no_grad():
        for _ in range(calls):
            t, noise, shown = draw_training_inputs(x0, labels, schedule.timesteps, g, p_uncond, spy.null_label)
            loss = diffusion_loss(spy, schedule, x0, t, noise, shown)
            assert loss.ndim == 0 and torch.isfinite(loss)
    assert len(spy.seen) == calls
    return torch.stack(spy.seen)


def test_loss_keeps_labels_with_p_uncond_zero():
    labels = torch.randint(0, 10, (64,), generator=gen(3))
    seen = spy_losses(0.0, labels, calls=3)
    assert all(torch.equal(s, labels) for s in seen)


def test_loss_hides_all_labels_with_p_uncond_near_one():
    labels = torch.randint(0, 10, (64,), generator=gen(4))
    seen = spy_losses(0.999999, labels)
    assert (seen == 10).all()


def test_loss_hides_a_binomial_fraction_of_labels():
    labels = torch.arange(500) % 10
    seen = spy_losses(0.1, labels, calls=8, seed=7, run_inner=False)  # 4000 labels
    hidden = seen == 10
    # Every label is either passed on unchanged or replaced by the null label.
    assert ((seen == labels) | hidden).all()
    n, p = hidden.numel(), 0.1
    assert abs(hidden.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n), hidden.float().mean().item()
    # Independent of the digit: each digit's 400 labels are hidden about 10% of the time.
    per_digit = [hidden[:, labels == d].float().mean().item() for d in range(10)]
    assert all(abs(f - p) < 5 * math.sqrt(p * (1 - p) / 400) for f in per_digit), per_digit
    # And fresh draws each call: the hidden sets of two calls are not the same.
    assert not torch.equal(hidden[0], hidden[1])


# --------------------------------------------------------- requested accuracy


class PixelClassifier(nn.Module):
    """Predicts the index of the brightest of the first ten pixels: predictions known by construction."""

    class Features(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] * 20

    def __init__(self):
        super().__init__()
        self.features = self.Features()
        self.head = nn.Identity()


def brute_force_requested_accuracy(predicted: list[int], requested: list[int]) -> list[float]:
    out = []
    for d in range(10):
        asked = sum(1 for r in requested if r == d)
        hits = sum(1 for p, r in zip(predicted, requested) if r == d and p == d)
        out.append(hits / asked if asked else float("nan"))
    return out


def assert_same_accuracies(got, expected):
    assert len(got) == 10
    for d, (a, b) in enumerate(zip(got, expected)):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), (d, a, b)


def test_requested_accuracy_against_a_python_loop_with_known_predictions():
    g, n = gen(8), 300
    requested = torch.randint(0, 9, (n,), generator=g)  # digit 9 never asked for: nan
    agree = torch.rand(n, generator=g) < 0.4
    predicted = torch.where(agree, requested, torch.randint(0, 10, (n,), generator=g))
    images = -1 + 0.5 * torch.rand(n, 1, 28, 28, generator=g)  # in [-1, -0.5]
    images.view(n, -1)[torch.arange(n), predicted] = 1.0  # the brightest of the first ten pixels
    reference = gaussian_stats(torch.randn(200, 10, generator=g, dtype=torch.float64))

    result = evaluate_images(PixelClassifier(), images, reference, requested=requested)
    expected = brute_force_requested_accuracy(predicted.tolist(), requested.tolist())
    assert math.isnan(expected[9]) and all(0 < a < 1 for a in expected[:9])
    assert_same_accuracies(result.requested_accuracy, expected)
    assert result.class_fractions == pytest.approx([predicted.tolist().count(d) / n for d in range(10)])
    assert "asked-for digit recognised" in result.summary()
    plain = evaluate_images(PixelClassifier(), images, reference)
    assert plain.requested_accuracy is None and plain.fid == pytest.approx(result.fid)


def test_requested_accuracy_with_a_random_digit_classifier():
    torch.manual_seed(9)
    classifier = DigitClassifier().eval()
    images = torch.rand(120, 1, 28, 28, generator=gen(10)) * 2 - 1
    # The label evaluate_images reads: the most probable class, the first of equal probabilities as torch.max takes it
    # (two logits a rounding apart can softmax to the same probability, and which is larger differs between CPUs).
    predicted = [max(range(10), key=lambda k: row[k]) for row in classify(classifier, images)[1].tolist()]
    # Half the requests are what the classifier will say, half are arbitrary.
    other = torch.randint(0, 10, (120,), generator=gen(11)).tolist()
    requested = torch.tensor([p if i % 2 else o for i, (p, o) in enumerate(zip(predicted, other))])
    reference = gaussian_stats(torch.randn(300, DigitClassifier.feature_dim, generator=gen(12), dtype=torch.float64))
    result = evaluate_images(classifier, images, reference, requested=requested)
    assert_same_accuracies(result.requested_accuracy, brute_force_requested_accuracy(predicted, requested.tolist()))


# ------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """One tiny conditional training run, with every (x0, labels) the loss was given recorded."""
    out = tmp_path_factory.mktemp("conditional") / "run"
    config = TrainConfig(
        epochs=1, batch_size=64, train_subset=256, model=replace(COND, attention=False), out_dir=str(out),
        grid_size=4, grid_steps=2, device="cpu", warmup_steps=10, p_uncond=0.25,
    )  # fmt: skip
    seen = []
    real_draw = trainer_module.draw_training_inputs

    def recording_draw(x0, labels, timesteps, generator, p_uncond=0.0, null_label=None):
        seen.append((x0.detach().contiguous().clone(), None if labels is None else labels.clone(), p_uncond))
        return real_draw(x0, labels, timesteps, generator, p_uncond, null_label)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "draw_training_inputs", recording_draw)
        result = train(config, progress=False)
    return SimpleNamespace(config=config, out=out, ckpt=out / "checkpoint.pt", seen=seen, result=result)


def test_trainer_gives_each_digit_its_own_label(conditional_run):
    images, labels = load_mnist(train=True, subset=256)
    label_of = {}
    for image, label in zip(images, labels.tolist()):
        label_of.setdefault(image.numpy().tobytes(), set()).add(label)
    seen = conditional_run.seen
    assert len(seen) == 4 and sum(len(x0) for x0, _, _ in seen) == 256
    for x0, given, p_uncond in seen:
        assert p_uncond == 0.25 and given is not None and len(given) == len(x0)
        for image, label in zip(x0, given.tolist()):
            assert label in label_of[image.numpy().tobytes()]


def test_conditional_run_checkpoint_records_num_classes(conditional_run):
    ckpt = read_checkpoint(conditional_run.ckpt)
    assert ckpt["config"]["model"]["num_classes"] == 10
    assert ckpt["ema"]["label_emb.weight"].shape[0] == 11
    assert (conditional_run.out / "epoch_001.png").exists()
    assert (conditional_run.out / "ema.safetensors").exists()
    model, _, config = load_checkpoint(conditional_run.ckpt, device="cpu")
    assert model.conditional and config.model.num_classes == 10


def test_resuming_a_conditional_run_unconditionally_is_refused(conditional_run):
    before = conditional_run.ckpt.read_bytes()
    unconditional = replace(conditional_run.config, epochs=2, model=replace(conditional_run.config.model, num_classes=0))
    with pytest.raises(CheckpointError, match="num_classes"):
        train(unconditional, resume=True, progress=False)
    assert conditional_run.ckpt.read_bytes() == before


@pytest.mark.parametrize("name", ["checkpoint.pt", "ema.safetensors"])
def test_load_model_insists_on_the_right_kind(conditional_run, name, tmp_path):
    path = conditional_run.out / name
    with pytest.raises(ValueError, match="add --conditional"):
        load_model(path, "cpu", conditional=False)
    model, _, _ = load_model(path, "cpu", conditional=True)
    assert model.conditional
    # And the converse: unconditional weights asked for as conditional.
    plain = tmp_path / "plain.safetensors"
    save_weights(SimpleUNet(UNCOND).state_dict(), plain, asdict(TrainConfig(model=UNCOND)))
    with pytest.raises(ValueError, match="drop --conditional"):
        load_model(plain, "cpu", conditional=True)
    assert not load_model(plain, "cpu")[0].conditional


# ----------------------------------------------------------------------- CLI


# In this process: the ``cli`` fixture of conftest.py.


def test_cli_class_without_conditional_is_refused(tmp_path, cli):
    result = cli("sample", "--class", "3", "--n", "2", "--out", str(tmp_path / "x.npz"))
    assert result.returncode == 2 and "--conditional" in result.stderr
    assert not (tmp_path / "x.npz").exists()


def test_cli_negative_guidance_is_refused(tmp_path, cli):
    result = cli("sample", "--conditional", "--guidance", "-1", "--out", str(tmp_path / "x.npz"))
    assert result.returncode == 2 and "--guidance" in result.stderr


def test_cli_p_uncond_without_conditional_is_refused(tmp_path, cli):
    result = cli("train", "--epochs", "1", "--p-uncond", "0.2", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "--conditional" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_samples_the_requested_digit(conditional_run, tmp_path, cli):
    out = tmp_path / "x.npz"
    result = cli("sample", "--conditional", "--class", "7", "--n", "4", "--steps", "2", "--device", "cpu",
                 "--checkpoint", str(conditional_run.ckpt), "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = np.load(out)
    assert saved["images"].dtype == np.uint8 and saved["images"].shape == (4, 28, 28)
    assert saved["labels"].tolist() == [7, 7, 7, 7]


def test_cli_conditional_npz_equals_the_python_api(conditional_run, tmp_path, cli):
    """Rows of 0..9 by default, batches of 4, w = 2.5: the same digits as sample_many in this process."""
    out = tmp_path / "x.npz"
    result = cli("sample", "--conditional", "--guidance", "2.5", "--n", "6", "--batch-size", "4", "--steps", "3",
                 "--seed", "4", "--device", "cpu", "--checkpoint", str(conditional_run.ckpt), "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = np.load(out)
    assert saved["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    model, schedule, _ = load_checkpoint(conditional_run.ckpt, device="cpu")
    images = sample_many(model, schedule, 6, "ddim", 3, seed=4, batch_size=4, guidance=Guidance(torch.arange(6), 2.5))
    np.testing.assert_array_equal(saved["images"], to_uint8(images))


# ----------------------------------------------------------- shipped weights


def test_shipped_weights_come_in_both_kinds():
    conditional, _, config = load_model(None, "cpu", conditional=True)
    assert conditional.conditional and config.model.num_classes == 10
    assert conditional.label_emb.weight.shape[0] == 11
    unconditional, _, config = load_model(None, "cpu")
    assert not unconditional.conditional and config.model.num_classes == 0


@pytest.mark.slow  # the reference statistics of the 10,000 test digits, and the real-digit floor
def test_cli_sweep_writes_both_curves(conditional_run, tmp_path, cli):
    """Guidance curve at each w, then the steps curve at the w with the lowest classifier-FID (none given)."""
    out = tmp_path / "curves.csv"
    result = cli("sweep", "--checkpoint", str(conditional_run.ckpt), "--n", "20", "--guidance", "0,2", "--guidance-steps", "2",
                 "--steps", "1,3", "--samplers", "ddim,ddpm", "--no-ddpm", "--device", "cpu", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = evaluation.read_curves(out)
    assert [(r["curve"], r["sampler"], r["steps"], r["guidance"]) for r in rows[:2]] == [
        ("guidance", "ddim", 2, 0.0),
        ("guidance", "ddim", 2, 2.0),
    ]
    best = min(rows[:2], key=lambda r: r["fid"])["guidance"]
    assert [(r["curve"], r["steps"], r["guidance"]) for r in rows[2:]] == [("steps", 1, best), ("steps", 3, best)]
    assert all(r["n"] == 20 and 0 <= r["worst_digit_accuracy"] <= r["mean_digit_accuracy"] <= 1 for r in rows)


def test_read_curves_keeps_each_rows_command_as_text(tmp_path):
    """A measurement file that says how each row was measured reads like the sweep's: numbers as numbers."""
    path = tmp_path / "by_steps.csv"
    path.write_text("sampler,steps,n,confident,fid,command\ndpm_solver,15,2000,0.902,0.461,python -m ddpm_lib evaluate --steps 15\n")
    assert evaluation.read_curves(path) == [
        {
            "sampler": "dpm_solver",
            "steps": 15,
            "n": 2000,
            "confident": 0.902,
            "fid": 0.461,
            "command": "python -m ddpm_lib evaluate --steps 15",
        }
    ]


def test_a_point_on_both_curves_is_drawn_once(monkeypatch):
    """Notebook 04's defaults put DDIM-20 at w = 1 on both curves: the same seed would draw the same digits twice."""
    floor = SimpleNamespace(fid=0.5)
    monkeypatch.setattr(evaluation, "reference_and_floor", lambda n: (None, None, floor))
    drawn = []

    def fake_measure(model, schedule, classifier, reference, n, sampler, steps, seed, eta, batch_size, w):
        drawn.append((sampler, steps, w))
        scores = SimpleNamespace(fid=float(len(drawn)), confident=0.9, requested_accuracy=[0.8, 1.0])
        return scores, 1.0

    monkeypatch.setattr(evaluation, "measure", fake_measure)
    rows = evaluation.guidance_and_steps_curves(None, NoiseSchedule("linear", 1000), 200, [0.0, 1.0], [10, 20], steps_for_guidance=20,
                                                guidance_for_steps=1.0, include_ddpm=False, samplers=["ddim", "ddpm"])  # fmt: skip
    assert drawn == [("ddim", 20, 0.0), ("ddim", 20, 1.0), ("ddim", 10, 1.0)]
    assert [(r["curve"], r["steps"], r["guidance"]) for r in rows] == [
        ("guidance", 20, 0.0),
        ("guidance", 20, 1.0),
        ("steps", 10, 1.0),
        ("steps", 20, 1.0),
    ]
    assert {**rows[1], "curve": "steps"} == rows[3]
