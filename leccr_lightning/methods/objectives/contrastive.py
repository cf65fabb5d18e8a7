"""Hinge-triplet and InfoNCE objectives (the losses themselves are pure functions in ``losses/``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from leccr_lightning.losses import hinge_triplet, info_nce
from leccr_lightning.methods.objectives.base import TEMPERATURE, PairContext, PairObjective


def symmetric_info_nce_of(context: PairContext, temperature: torch.Tensor) -> torch.Tensor:
    """0.5 [info_nce(S/t, P) + info_nce(S^T/t, P^T)] over the context's two directions (``symmetric_info_nce``)."""
    if temperature.numel() != 1 or not bool(temperature > 0):
        raise ValueError(f"temperature: expected a positive scalar, got {temperature}")
    return context.both_directions(lambda scores, positives: info_nce(scores / temperature, positives))


class TripletObjective(PairObjective):
    """Hinge triplet in both directions, L = L(S) + L(S^T) (VSE++/NRCCR: margin 0.2, hardest negative, sum)."""

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "hardest",
        selective_eps: float = 0.01,
        soft_tau: float = 0.01,
        reduction: str = "sum",
    ):
        super().__init__()
        self.margin, self.mining, self.selective_eps = margin, mining, selective_eps
        self.soft_tau, self.reduction = soft_tau, reduction

    def forward(self, context: PairContext) -> torch.Tensor:
        loss = context.both_directions(
            hinge_triplet,
            weights=(1.0, 1.0),
            margin=self.margin,
            mining=self.mining,
            selective_eps=self.selective_eps,
            soft_tau=self.soft_tau,
            reduction=self.reduction,
        )
        return loss * context.sum_scale if self.reduction == "sum" else loss


class InfoNCEObjective(PairObjective):
    """Symmetric multi-positive InfoNCE with temperature ``temperature`` (learnable if ``learnable``, kept in
    log space and clamped to [``min_temperature``, 1] as in CLIP/X-VLM)."""

    def __init__(self, temperature: float = 0.07, learnable: bool = False, min_temperature: float = 0.001):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=learnable)
        self.min_log = math.log(min_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(self.min_log, 0.0).exp()

    def forward(self, context: PairContext) -> torch.Tensor:
        return symmetric_info_nce_of(context, self.temperature)


class MethodTemperatureInfoNCE(PairObjective):
    """Symmetric multi-positive InfoNCE at the method's own learnable temperature ``context.temperature`` (LECCR
    §3.3 item 1: the same tau also serves the slot-text loss, so it lives in the method)."""

    reads = frozenset({TEMPERATURE})

    def forward(self, context: PairContext) -> torch.Tensor:
        return symmetric_info_nce_of(context, context.temperature)
