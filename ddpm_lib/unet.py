"""SimpleUNet: the denoising network for 28x28 digits, eps_theta(x_t, t[, y]) or v_theta(x_t, t[, y]).

A small U-Net in the style of Ho et al. (2020): residual blocks (GroupNorm,
SiLU, 3x3 conv) that each receive the timestep embedding, a 28 -> 14 -> 7
down path, a 7 -> 14 -> 28 up path joined to it by skip connections, and
optional self-attention at 7x7. It knows nothing about noise schedules: it
maps (x_t, t) to a tensor shaped like x_t, and the sampler decides what that
tensor means.

With ``num_classes > 0`` it is class-conditional (Ho & Salimans 2022): a
learned embedding of the label y is added to the timestep embedding, and one
extra row of that table, the null label (the paper's null token), stands for
"no label". The same network then gives both eps_theta(x_t, t, y) and
eps_theta(x_t, t, null), which is all classifier-free guidance needs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Far beyond anything that helps on 28x28 digits (the shipped models: widths up to 128, one block per
# level); the limits stop a typo or a crafted weights file from asking for tens of gigabytes.
MAX_WIDTH = 1024
MAX_BLOCKS_PER_LEVEL = 4
MAX_CLASSES = 1000


@dataclass(frozen=True)
class UNetConfig:
    """Widths of the three resolutions (28, 14, 7) and what goes in between."""

    channels: tuple[int, int, int] = (16, 32, 64)
    blocks_per_level: int = 1
    attention: bool = True  # self-attention at 7x7
    groups: int = 8  # GroupNorm groups; must divide every width
    num_classes: int = 0  # 0: unconditional; 10: conditioned on the digit, plus the null label
    time_input: bool = True  # False withholds t (every block is told t = 0): notebook 02's ablation

    def __post_init__(self):
        # Types are checked too: these values also come from JSON in weights files, where "16" or 16.5 may stand.
        if not isinstance(self.channels, (list, tuple)) or len(self.channels) != 3 or not all(map(_is_whole, self.channels)):
            raise ValueError(f"channels needs three whole numbers, the widths at 28, 14 and 7 pixels; got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        checks = [
            ("groups", _is_whole(self.groups) and self.groups >= 1, "a whole number, at least 1"),
            ("blocks_per_level", _is_whole(self.blocks_per_level) and 1 <= self.blocks_per_level <= MAX_BLOCKS_PER_LEVEL,
             f"a whole number from 1 to {MAX_BLOCKS_PER_LEVEL}"),
            ("attention", isinstance(self.attention, bool), "True or False"),
            ("time_input", isinstance(self.time_input, bool), "True or False"),
            ("num_classes", _is_whole(self.num_classes) and 0 <= self.num_classes <= MAX_CLASSES,
             f"0 (unconditional) or the number of labels, at most {MAX_CLASSES}"),
        ]  # fmt: skip
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if any(c <= 0 or c % self.groups for c in self.channels):
            raise ValueError(f"every width in {self.channels} must be a positive multiple of groups={self.groups}")
        if max(self.channels) > MAX_WIDTH:
            raise ValueError(f"every width in {self.channels} must be at most {MAX_WIDTH}")
        if self.channels[0] % 2:
            raise ValueError(f"channels[0] sets the sinusoidal embedding size and must be even, got {self.channels[0]}")


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, as for positions in a Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """Two GroupNorm-SiLU-conv layers with the timestep added in between, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (b, h*w, c)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class SimpleUNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        g, blocks = config.groups, config.blocks_per_level
        self.emb_dim = emb_dim = 4 * c1
        self.time_mlp = nn.Sequential(nn.Linear(c1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if config.num_classes:
            # Row num_classes is the learned null label: "no label".
            self.label_emb = nn.Embedding(config.num_classes + 1, emb_dim)

        self.conv_in = nn.Conv2d(1, c1, 3, padding=1)
        # Down path: each level's blocks, then a stride-2 conv (28 -> 14 -> 7).
        self.down = nn.ModuleList()
        widths = [c1]  # channels of every tensor kept for a skip connection
        in_ch = c1
        for level, ch in enumerate((c1, c2, c3)):
            for _ in range(blocks):
                self.down.append(ResBlock(in_ch, ch, emb_dim, g))
                in_ch = ch
                widths.append(ch)
            if level < 2:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                widths.append(ch)

        self.mid1 = ResBlock(c3, c3, emb_dim, g)
        self.mid_attn = SelfAttention(c3, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock(c3, c3, emb_dim, g)

        # Up path: mirror image, each block eating one skip; upsample 7 -> 14 -> 28.
        self.up = nn.ModuleList()
        for level, ch in reversed(list(enumerate((c1, c2, c3)))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(in_ch + widths.pop(), ch, emb_dim, g))
                in_ch = ch
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))

        self.norm_out = nn.GroupNorm(g, c1)
        self.conv_out = nn.Conv2d(c1, 1, 3, padding=1)
        # Starting from a zero output makes the untrained model predict "no noise",
        # which keeps the first steps of training calm.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    @property
    def null_label(self) -> int:
        """The null label: the label index meaning "no label" (conditional models only)."""
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction (noise or v, as the run's objective trained it). ``labels``: digits 0..9, or ``null_label``; None means the null label for all."""
        if x.shape[-2:] != (28, 28):
            raise ValueError(f"SimpleUNet expects 28x28 images, got {tuple(x.shape[-2:])}")
        emb = self.time_mlp(timestep_embedding(t if self.config.time_input else torch.zeros_like(t), self.config.channels[0]))
        if self.conditional:
            if labels is None:
                labels = torch.full_like(t, self.null_label)
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("this model is unconditional (num_classes=0) and cannot take labels; use a conditional model")
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
