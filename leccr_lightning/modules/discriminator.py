"""NRCCR's language discriminator over encoder token states (ccr_methods §2.1; LiJiaBei-7/nrccr:adv.py)."""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.pooling import pool

KINDS = ("not-so-weak", "strong")


class ResidualConvBlock(nn.Module):
    """x + scale * Conv1d(ReLU(Conv1d(ReLU(x)))) (the ``strong`` discriminator's block, adv.py:47-63).

    With a ``keep`` mask [B, 1, L] every convolution's output is zeroed at padded positions, so a sequence gives what
    it gives alone with zero padding at its ends.
    """

    def __init__(self, channels: int, kernel: int = 5, scale: float = 0.3):
        super().__init__()
        self.scale = scale
        self.first = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.second = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        inner = _keep(self.first(torch.relu(x)), keep)
        return x + self.scale * _keep(self.second(torch.relu(inner)), keep)


def _keep(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x if keep is None else x * keep


class LanguageDiscriminator(nn.Module):
    """Two language logits [B, 2] from token states [B, L, H] and their mask (``train_level='sent'``, adv.py:23-32).

    ``kind="not-so-weak"`` (Multi30K, MSCOCO, MSR-VTT; adv.py:94-114): mean over positions, then MLP
    H -> 256 -> 128 -> 2 with tanh. ``kind="strong"`` (VATEX; adv.py:68-91): 1x1 conv to ``channels`` (128), ``blocks``
    (3) residual conv blocks (kernel 5, residual scale 0.3), mean over positions, Linear -> 2. The mean is over the
    valid positions and the convolutions see zeros at padded ones; ``unmasked_mean`` is the official behaviour (the
    convolutions run over the padding states and ``torch.mean(output, dim=1)`` averages every position).
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
        unmasked_mean: bool = False,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"discriminator kind: expected one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.unmasked_mean = unmasked_mean
        if kind == "not-so-weak":
            self.net = nn.Sequential(
                nn.Linear(in_dim, mlp_hidden[0]),
                nn.Tanh(),
                nn.Linear(*mlp_hidden),
                nn.Tanh(),
                nn.Linear(mlp_hidden[1], 2),
            )
        else:
            self.project = nn.Conv1d(in_dim, channels, 1)
            self.blocks = nn.ModuleList(ResidualConvBlock(channels, kernel, residual_scale) for _ in range(blocks))
            self.net = nn.Linear(channels, 2)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "strong":
            keep = None if self.unmasked_mean else mask.to(states.dtype)[:, None, :]
            features = _keep(self.project(_keep(states.transpose(1, 2), keep)), keep)
            for block in self.blocks:
                features = block(features, keep)
            states = features.transpose(1, 2)
        return self.net(pool(states, mask, "mean", self.unmasked_mean))
