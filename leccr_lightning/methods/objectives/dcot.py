"""DCOT's confidence-weighted alignment objective (ccr_methods §5, [recon]).

DCOT has no public code; everything numeric follows our reading of the paper (§5.2 [recon]), each choice a
named argument. Per batch of (v_i, s_i, t_i), on detached unit embeddings:

    C^L_ij = 1 - cos(s_i, t_j),   C^M_ij = 1 - cos(v_i, t_j),   C = lambda C^L + (1 - lambda) C^M
    P* = argmin_{P 1 = a, P^T 1 = b} <P, C> - eps H(P)   (a = b uniform, log-domain Sinkhorn through POT)
    w_i = P*_ii / sum_j P*_ij  (= B P*_ii)

lambda follows the dual-view curriculum (training progress, or each view's in-batch accuracy). The
confidences (no gradient) weight the per-query terms of the (t, v) alignment loss after a warm-up. As a
``PairObjective`` it plugs into every retrieval method that provides the visual, source and target embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.losses import CurriculumSchedule, bidirectional, hinge_triplet, symmetric_info_nce
from leccr_lightning.losses.transport import plan_confidences, sinkhorn_plan
from leccr_lightning.losses.weighted import weighted_bidirectional_triplet, weighted_symmetric_info_nce
from leccr_lightning.methods.objectives.base import FULL_SCORES, PairContext, PairObjective, embedding

BASES = ("triplet", "infonce")


def in_batch_accuracy(cost: Tensor, positive_mask: Tensor) -> float:
    """Fraction of rows whose lowest-cost column is a positive (diagonal R@1 of one view)."""
    best = cost.argmin(dim=1)
    return float(positive_mask[torch.arange(len(best), device=cost.device), best].float().mean())


class DCOTObjective(PairObjective):
    """Confidence-weighted alignment loss (ccr_methods §5.2 use (a); all defaults [recon]).

    Args:
        base: ``"triplet"`` (VSE++ hardest, ``margin`` 0.2, sum, both directions) or ``"infonce"``
            (symmetric, ``temperature`` 0.07).
        epsilon, max_iter, stop_threshold: Sinkhorn entropy 0.05, 100 iterations, tol 1e-6 (float64).
        curriculum_mode ``"progress"`` (lambda from ``curriculum_start`` 1.0 to ``curriculum_end`` 0.5 along
            ``curriculum_ramp``) or ``"accuracy"`` (lambda = r^L / (r^L + r^M), EMA of in-batch accuracies).
        warmup: training progress before which the confidences are 1 (0.1).
        normalize: divide the confidences by their batch mean (keeps the loss scale; w = 1 is unchanged).
        weighted_pairs: the row roles whose (rows, visual) pairs get weights (the MT ``target`` only).
    Each training call on a weighted pair records (caption id, confidence) for ``ConfidenceLogger``.
    """

    reads = frozenset({embedding("visual"), embedding("source"), embedding("target"), FULL_SCORES})

    def __init__(
        self,
        base: str = "triplet",
        margin: float = 0.2,
        temperature: float = 0.07,
        epsilon: float = 0.05,
        max_iter: int = 100,
        stop_threshold: float = 1e-6,
        curriculum_mode: str = "progress",
        curriculum_start: float = 1.0,
        curriculum_end: float = 0.5,
        curriculum_ramp: str = "linear",
        curriculum_momentum: float = 0.9,
        warmup: float = 0.1,
        normalize: bool = True,
        weighted_pairs: tuple[str, ...] = ("target",),
    ):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"DCOTObjective base: expected one of {BASES}, got {base!r}")
        self.base, self.margin, self.temperature = base, margin, temperature
        self.epsilon, self.max_iter, self.stop_threshold = epsilon, max_iter, stop_threshold
        self.curriculum = CurriculumSchedule(
            mode=curriculum_mode,
            start=curriculum_start,
            end=curriculum_end,
            ramp=curriculum_ramp,
            ema_momentum=curriculum_momentum,
        )
        self.warmup, self.normalize, self.weighted_pairs = warmup, normalize, tuple(weighted_pairs)
        self.recorded: list[tuple[list[str], Tensor]] = []
        self.view_weight = 1.0

    def get_extra_state(self) -> Tensor:
        """The curriculum's accuracy EMA (r^L, r^M) as a tensor (empty before the first batch), saved with the
        model's state dict so that a run resumed from a checkpoint continues the same curriculum."""
        ema = self.curriculum.state_dict()["ema"]
        return torch.tensor([] if ema is None else list(ema), dtype=torch.float64)

    def set_extra_state(self, state: Tensor) -> None:
        self.curriculum.load_state_dict({"ema": None if state.numel() == 0 else tuple(state.tolist())})

    @torch.no_grad()
    def confidences(
        self, visual: Tensor, source: Tensor, target: Tensor, positive_mask: Tensor, progress: float
    ) -> Tensor:
        """w_i = B P*_ii of the plan for the curricular cost lambda C^L + (1 - lambda) C^M (detached)."""
        s, t = F.normalize(source.detach().double(), dim=-1), F.normalize(target.detach().double(), dim=-1)
        v = F.normalize(visual.detach().double(), dim=-1)
        lingual, modal = 1.0 - s @ t.T, 1.0 - v @ t.T
        accuracy = None
        if self.curriculum.mode == "accuracy":
            accuracy = (in_batch_accuracy(lingual, positive_mask), in_batch_accuracy(modal, positive_mask))
        lam, mu = self.curriculum.weights(progress, accuracy)
        self.view_weight = lam
        plan = sinkhorn_plan(
            lam * lingual + mu * modal,
            self.epsilon,
            max_iter=self.max_iter,
            stop_threshold=self.stop_threshold,
        )
        return plan_confidences(plan).to(visual.dtype)

    def _loss(self, scores: Tensor, positive_mask: Tensor, weights: Tensor | None) -> Tensor:
        if self.base == "triplet":
            if weights is None:
                return bidirectional(hinge_triplet, scores, positive_mask, weights=(1.0, 1.0), margin=self.margin)
            return weighted_bidirectional_triplet(scores, positive_mask, weights, weights, self.margin)
        if weights is None:
            return symmetric_info_nce(scores, positive_mask, self.temperature)
        return weighted_symmetric_info_nce(scores, positive_mask, weights, weights, self.temperature)

    def forward(self, context: PairContext) -> Tensor:
        scores, positives = context.scores, context.positives
        if context.rows not in self.weighted_pairs or context.columns != "visual":
            return self._loss(scores, positives, None)
        embeddings = context.embeddings
        weights = self.confidences(
            embeddings["visual"], embeddings["source"], embeddings["target"], positives, context.progress
        )
        caption_ids = context.batch.get("caption_ids")
        if self.training and not context.gathered and caption_ids is not None and len(caption_ids) == len(weights):
            self.recorded.append((list(caption_ids), weights.detach().cpu()))
        if context.progress < self.warmup:
            weights = torch.ones_like(weights)
        elif self.normalize:
            weights = weights / weights.mean().clamp(min=torch.finfo(weights.dtype).tiny)
        return self._loss(scores, positives, weights)

    def pop_recorded(self) -> dict[str, float]:
        """caption id -> confidence of the calls recorded since the last pop (later calls win), then clear."""
        result = {}
        for ids, weights in self.recorded:
            result.update(zip(ids, weights.tolist(), strict=True))
        self.recorded = []
        return result
