"""ProTA's adaptive-margin contrastive objective (itr_video_methods §3.1-3.2; the loss is ``losses.probabilistic``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from leccr_lightning.losses.probabilistic import adaptive_margin_info_nce
from leccr_lightning.methods.objectives.base import PairContext, PairObjective, embedding

MARGIN_RULES = ("uncertainty", "constant")


class AdaptiveMarginObjective(PairObjective):
    """Symmetric InfoNCE with an adaptive margin m_i on each positive pair (ProTA's L_contra).

    The margin rule is not known [recon]: ``uncertainty`` (default) gives m_i = ``margin`` * exp(-u_i), with u_i the
    mean token variance of the pair (text i and video i, detached; the step carries them as the roles
    ``source_uncertainty`` and ``visual_uncertainty``, [N, 1]): confident pairs are pushed apart by the whole margin,
    uncertain ones (a caption that describes only part of the video) by less. ``constant`` gives m_i = ``margin``;
    ``margin = 0`` is CLIP's symmetric InfoNCE. The temperature starts at ``temperature`` (CLIP: 0.01) and is learnt
    in log space when ``learnable``, clamped to [``min_temperature``, 1].
    """

    reads = frozenset({embedding("source_uncertainty"), embedding("visual_uncertainty")})

    def __init__(
        self,
        margin: float = 0.1,
        margin_rule: str = "uncertainty",
        temperature: float = 0.01,
        learnable: bool = True,
        min_temperature: float = 0.001,
    ):
        super().__init__()
        if margin_rule not in MARGIN_RULES:
            raise ValueError(f"margin_rule {margin_rule!r}: expected one of {MARGIN_RULES}")
        self.margin, self.margin_rule = margin, margin_rule
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=learnable)
        self.min_log = math.log(min_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(self.min_log, 0.0).exp()

    def margins(self, context: PairContext) -> torch.Tensor:
        """m_i of every row's pair [R]."""
        if self.margin_rule == "constant":
            return context.scores.new_full((context.scores.shape[0],), self.margin)
        uncertainty = (
            context.embeddings["source_uncertainty"][:, 0] + context.embeddings["visual_uncertainty"][:, 0]
        ) / 2
        return self.margin * torch.exp(-uncertainty.detach())

    def forward(self, context: PairContext) -> torch.Tensor:
        return adaptive_margin_info_nce(context.scores, context.positives, self.temperature, self.margins(context))
