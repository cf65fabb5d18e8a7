"""NRCCR's language discriminator over encoder token states (ccr_methods §2.1, ``adv.py``)."""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.pooling import masked_mean

KINDS = ("not-so-weak", "strong")


class ResidualConvBlock(nn.Module):
    """x + scale * Conv1d(ReLU(Conv1d(ReLU(x)))) (the ``strong`` discriminator's block)."""

    def __init__(self, channels: int, kernel: int = 5, scale: float = 0.3):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.body(x)


class LanguageDiscriminator(nn.Module):
    """Two language logits [B, 2] from token states [B, L, H] and their mask.

    ``kind="not-so-weak"`` (Multi30K, MSCOCO, MSR-VTT): masked mean over positions, then MLP
    H -> 256 -> 128 -> 2 with tanh. ``kind="strong"`` (VATEX): 1x1 conv to ``channels`` (128), ``blocks``
    (3) residual conv blocks (kernel 5, residual scale 0.3), masked mean over positions, Linear -> 2.
    """

    def __init__(
        self,
        in_dim: int,
        kind: str = "not-so-weak",
        mlp_hidden: tuple[int, int] = (256, 128),
        channels: int = 128,
        blocks: int = 3,
        kernel: int = 5,
        residual_scale: float = 0.3,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"discriminator kind: expected one of {KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "not-so-weak":
            self.net = nn.Sequential(
                nn.Linear(in_dim, mlp_hidden[0]),
                nn.Tanh(),
                nn.Linear(*mlp_hidden),
                nn.Tanh(),
                nn.Linear(mlp_hidden[1], 2),
            )
        else:
            self.conv = nn.Sequential(
                nn.Conv1d(in_dim, channels, 1),
                *[ResidualConvBlock(channels, kernel, residual_scale) for _ in range(blocks)],
            )
            self.net = nn.Linear(channels, 2)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "not-so-weak":
            return self.net(masked_mean(states, mask))
        features = self.conv(states.transpose(1, 2)).transpose(1, 2)
        return self.net(masked_mean(features, mask))
