"""Alignment objectives a method takes as a constructor argument (``objective: class_path ...`` in YAML).

An objective maps a [texts, visuals] score matrix and its positive mask to a scalar loss; ``context`` carries what
some objectives need besides the scores (e.g. relevance or confidences). Objectives are ``nn.Module`` s so that a
learnable temperature lives here, in the method layer, while the loss formulas stay pure in ``losses/``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import nn

from leccr_lightning.losses import bidirectional, hinge_triplet, symmetric_info_nce


class PairObjective(nn.Module, ABC):
    """Base of alignment objectives: ``forward(scores, positive_mask, context) -> loss``."""

    @abstractmethod
    def forward(
        self, scores: torch.Tensor, positive_mask: torch.Tensor, context: Mapping | None = None
    ) -> torch.Tensor:
        """The scalar loss of a [texts, visuals] score matrix."""


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

    def forward(self, scores, positive_mask, context=None):
        return bidirectional(
            hinge_triplet,
            scores,
            positive_mask,
            weights=(1.0, 1.0),
            margin=self.margin,
            mining=self.mining,
            selective_eps=self.selective_eps,
            soft_tau=self.soft_tau,
            reduction=self.reduction,
        )


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

    def forward(self, scores, positive_mask, context=None):
        return symmetric_info_nce(scores, positive_mask, self.temperature)
