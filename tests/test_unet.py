"""SimpleUNet checked against hand-derived references.

- shapes: 28x28 in, 28x28 out; anything else is a ValueError;
- parameter count: summed layer by layer from the architecture description
  (28 -> 14 -> 7 down path, one skip per up block) with the textbook sizes of
  Conv2d, Linear and GroupNorm, not read off the module;
- gradients: reach every parameter (after one optimiser step, see below);
- self-attention: against softmax(Q K^T / sqrt(c)) V written with plain matmuls;
- batch independence: no layer mixes images of a batch (GroupNorm, not BatchNorm);
- timestep embedding: against sin / cos of t * 10000^(-i / half) in Python floats;
- bad configs: ValueError.
A tiny config keeps every forward pass in milliseconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddpm_lib.unet import SelfAttention, SimpleUNet, UNetConfig, count_parameters, timestep_embedding

TINY = UNetConfig(channels=(8, 16, 24), blocks_per_level=1, attention=True, groups=8)


def tiny_model(seed: int = 0, config: UNetConfig = TINY) -> SimpleUNet:
    torch.manual_seed(seed)
    return SimpleUNet(config)


def batch(n: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 1000, (n,), generator=g)


# ------------------------------------------------------------------- shapes


def test_output_has_the_input_shape():
    x, t = batch(3)
    assert tiny_model()(x, t).shape == (3, 1, 28, 28)


def test_untrained_output_is_exactly_zero():
    # conv_out starts at zero so the untrained model predicts "no noise".
    x, t = batch(2)
    assert torch.all(tiny_model()(x, t) == 0)


@pytest.mark.parametrize("size", [(32, 32), (27, 28), (14, 14)])
def test_wrong_image_size_raises(size):
    with pytest.raises(ValueError, match="28x28"):
        tiny_model()(torch.zeros(1, 1, *size), torch.zeros(1, dtype=torch.long))


# --------------------------------------------------------- parameter count


def conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def linear(i: int, o: int) -> int:
    return i * o + o


def norm(c: int) -> int:
    return 2 * c  # GroupNorm: a scale and a shift per channel


def resblock(i: int, o: int, e: int) -> int:
    # norm, 3x3 conv, timestep projection, norm, 3x3 conv, 1x1 skip when widths differ
    return norm(i) + conv(i, o, 3) + linear(e, o) + norm(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)


def attention(c: int) -> int:
    return norm(c) + conv(c, 3 * c, 1) + conv(c, c, 1)


def expected_parameters(c1: int, c2: int, c3: int, with_attention: bool) -> int:
    """One block per level. Skips kept on the way down, at their widths:
    conv_in c1@28, block c1@28, downsample c1@14, block c2@14, downsample c2@7, block c3@7;
    the up path eats them in reverse, one per block, concatenated to its input."""
    e = 4 * c1
    total = linear(c1, e) + linear(e, e)  # time MLP on a c1-dim sinusoidal embedding
    total += conv(1, c1, 3)  # conv_in
    total += resblock(c1, c1, e) + conv(c1, c1, 3)  # 28, then stride-2 conv to 14
    total += resblock(c1, c2, e) + conv(c2, c2, 3)  # 14, then to 7
    total += resblock(c2, c3, e)  # 7
    total += 2 * resblock(c3, c3, e) + (attention(c3) if with_attention else 0)  # middle
    total += resblock(c3 + c3, c3, e) + resblock(c3 + c2, c3, e) + conv(c3, c3, 3)  # 7, upsample conv
    total += resblock(c3 + c2, c2, e) + resblock(c2 + c1, c2, e) + conv(c2, c2, 3)  # 14, upsample conv
    total += resblock(c2 + c1, c1, e) + resblock(c1 + c1, c1, e)  # 28
    total += norm(c1) + conv(c1, 1, 3)  # output
    return total


@pytest.mark.parametrize("with_attention", [True, False])
def test_parameter_count_matches_the_architecture(with_attention):
    config = UNetConfig(channels=(8, 16, 24), blocks_per_level=1, attention=with_attention, groups=8)
    model = SimpleUNet(config)
    expected = expected_parameters(8, 16, 24, with_attention)
    assert count_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected


def test_parameter_count_of_the_default_model():
    # The default widths (16, 32, 64) through the same hand count; notebook 02 prints this number.
    assert count_parameters(SimpleUNet()) == expected_parameters(16, 32, 64, True) == 636_465


# --------------------------------------------------------------- gradients


def test_gradient_reaches_every_parameter():
    # conv_out starts at exactly zero. Its input gradient is W^T * upstream = 0, so
    # on the first backward pass ONLY conv_out gets a gradient and everything before
    # it gets exactly zero. One optimiser step makes conv_out non-zero; from then on
    # the gradient must reach every parameter tensor. (Within qkv.bias the key part
    # alone has zero gradient, since softmax ignores a shift shared by all keys; the
    # tensor as a whole still has a non-zero gradient.)
    model = tiny_model()
    x, t = batch(2)
    target = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    F.mse_loss(model(x, t), target).backward()
    for name, p in model.named_parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        if name.startswith("conv_out."):
            assert grad.abs().sum() > 0, name
        else:
            assert torch.all(grad == 0), name

    optimizer.step()
    optimizer.zero_grad()
    F.mse_loss(model(x, t), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_images_in_a_batch_do_not_interact():
    model = tiny_model()
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)  # a non-trivial output
    x, t = batch(3)
    together = model(x, t)
    alone = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_output_depends_on_the_timestep():
    model = tiny_model()
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    x = batch(1)[0].expand(2, 1, 28, 28)
    out = model(x, torch.tensor([10, 900]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_withheld_timestep_is_the_same_network_told_t_0():
    """time_input=False (notebook 02's ablation) keeps every weight and replaces t by 0."""
    seeing, blind = tiny_model(), tiny_model(config=UNetConfig(**{**TINY.__dict__, "time_input": False}))
    blind.load_state_dict(seeing.state_dict())
    for model in (seeing, blind):
        torch.nn.init.normal_(model.conv_out.weight, std=0.1, generator=torch.Generator().manual_seed(2))
    x = batch(1)[0].expand(2, 1, 28, 28)
    t = torch.tensor([10, 900])
    out = blind(x, t)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out, seeing(x, torch.zeros_like(t)))


# ---------------------------------------------------------------- attention


def test_self_attention_matches_softmax_qk_v():
    torch.manual_seed(0)
    c = 16
    layer = SelfAttention(c, groups=8)
    for p in layer.parameters():  # GroupNorm starts at (1, 0); randomise everything
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, c, 7, 7)
    h = F.group_norm(x, 8, layer.norm.weight, layer.norm.bias, layer.norm.eps).flatten(2)  # (b, c, n)
    w = layer.qkv.weight[:, :, 0, 0]  # (3c, c): rows are [W_q; W_k; W_v]
    qkv = torch.einsum("oc,bcn->bon", w, h) + layer.qkv.bias[None, :, None]
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]  # each (b, c, n)
    scores = torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c)  # query i, key j
    attended = torch.einsum("bij,bcj->bci", scores.softmax(dim=-1), v)
    out = torch.einsum("oc,bcn->bon", layer.out.weight[:, :, 0, 0], attended) + layer.out.bias[None, :, None]
    expected = x + out.reshape(2, c, 7, 7)
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------ timestep embedding


def test_timestep_embedding_is_sin_and_cos_of_geometric_frequencies():
    dim, half = 32, 16
    t = torch.tensor([0, 1, 17, 500, 999])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (5, dim)
    for row, ti in enumerate(t.tolist()):
        for i in range(half):
            angle = ti * 10_000 ** (-i / half)
            assert emb[row, i].item() == pytest.approx(math.sin(angle), abs=1e-4)
            assert emb[row, half + i].item() == pytest.approx(math.cos(angle), abs=1e-4)


def test_timestep_embedding_is_bounded_and_distinct_for_every_t():
    emb = timestep_embedding(torch.arange(1000), 32)
    assert emb.abs().max() <= 1
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 10
    assert distances.min() > 1e-3  # no two timesteps share an embedding


# ------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"channels": (8, 12, 16), "groups": 8}, "groups"),  # 12 is not a multiple of 8
        ({"channels": (0, 8, 8), "groups": 8}, "groups"),
        ({"channels": (8, 16)}, "channels"),
        ({"channels": (8, 16, 24, 32)}, "channels"),
        ({"channels": (8, 16, 24), "blocks_per_level": 0}, "blocks_per_level"),
    ],
)
def test_invalid_config_raises(kwargs, word):
    with pytest.raises(ValueError, match=word):
        UNetConfig(**kwargs)


def test_odd_base_width_is_rejected():
    # timestep_embedding(t, c1) yields 2 * (c1 // 2) features, so an odd c1 cannot work.
    with pytest.raises(ValueError, match="even"):
        UNetConfig(channels=(9, 18, 27), groups=9)


# ------------------------------------------------------------------ diagram


@pytest.mark.parametrize("blocks, attention", [(1, True), (2, False)])
def test_diagram_draws_the_blocks_the_network_has(blocks, attention):
    """plot_unet_diagram reads the modules: per level n ResBlocks down and n + 1 up, each marked as taking t."""
    import matplotlib

    matplotlib.use("Agg")
    from ddpm_lib.plots import plot_unet_diagram

    config = UNetConfig(channels=(8, 16, 24), blocks_per_level=blocks, attention=attention)
    figure = plot_unet_diagram(SimpleUNet(config))
    texts = [text.get_text() for text in figure.axes[0].texts]
    for pixels, width in zip((28, 14, 7), config.channels):
        assert f"{blocks} ResBlock{'s' * (blocks > 1)}: {' → '.join([str(width)] * blocks)} ch\n{pixels}×{pixels} pixels" in texts
        assert f"{blocks + 1} ResBlocks: {' → '.join([str(width)] * (blocks + 1))} ch\n{pixels}×{pixels}, each with a skip" in texts
    assert texts.count("t") == 3 + 3 + 2  # a badge on every box of ResBlocks: down, up, and the middle two
    assert ("self-attention\nall 49 pixels" in texts) == attention
    assert f"{count_parameters(SimpleUNet(config)):,} parameters" in figure.axes[0].get_title()


# UNetConfig's refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"channels": (100_000, 100_000, 100_000)}, "at most 1024"),
        ({"channels": ("16", "32", "64")}, "channels"),
        ({"channels": 16}, "channels"),
        ({"groups": 0}, "groups"),
        ({"attention": "no"}, "attention"),
        ({"num_classes": True}, "num_classes"),
        ({"blocks_per_level": 5}, "blocks_per_level"),
    ],
)
def test_unet_config_refuses_absurd_or_mistyped_settings_naming_them(settings, named):
    with pytest.raises(ValueError, match=named):
        UNetConfig(**settings)


def test_unet_config_takes_widths_as_any_whole_numbers():
    import numpy as np

    assert UNetConfig(channels=[np.int64(8), 16, 16]).channels == (8, 16, 16)
