"""DCOT: dual-view curricular optimal transport against noisy MT correspondence (ccr_methods §5, [recon]).

DCOT has no public code; everything numeric follows our reading of the paper (§5.2 [recon]), each choice a
named argument. Per batch of (v_i, s_i, t_i), on detached unit embeddings:

    C^L_ij = 1 - cos(s_i, t_j),   C^M_ij = 1 - cos(v_i, t_j),   C = lambda C^L + (1 - lambda) C^M
    P* = argmin_{P 1 = a, P^T 1 = b} <P, C> - eps H(P)   (a = b uniform, log-domain Sinkhorn through POT)
    w_i = P*_ii / sum_j P*_ij  (= B P*_ii)

lambda follows the dual-view curriculum (training progress, or each view's in-batch accuracy). The
confidences (no gradient) weight the per-query terms of the (t, v) alignment loss after a warm-up.
``DCOTObjective`` is a ``PairObjective``, so it plugs into the baseline (``objective:``) as well; ``DCOT`` is
the dual encoder with it.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.losses import CurriculumSchedule, bidirectional, hinge_triplet, symmetric_info_nce
from leccr_lightning.losses.transport import plan_confidences, sinkhorn_plan
from leccr_lightning.losses.weighted import weighted_bidirectional_triplet, weighted_symmetric_info_nce
from leccr_lightning.methods.baseline import DualEncoderBaseline
from leccr_lightning.methods.objectives import PairObjective

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
        weighted_pairs: the ``context["pair"]`` values that get weights (MT ``target`` only).
    Each training call on a weighted pair records (caption id, confidence) for :class:`ConfidenceLogger`.
    """

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

    def forward(self, scores: Tensor, positive_mask: Tensor, context: Mapping | None = None) -> Tensor:
        if context is None or context.get("pair") not in self.weighted_pairs:
            return self._loss(scores, positive_mask, None)
        progress = float(context.get("progress", 1.0))
        weights = self.confidences(context["visual"], context["source"], context["target"], positive_mask, progress)
        batch = context.get("batch")
        if self.training and batch is not None and len(batch["caption_ids"]) == len(weights):
            self.recorded.append((list(batch["caption_ids"]), weights.detach().cpu()))
        if progress < self.warmup:
            weights = torch.ones_like(weights)
        elif self.normalize:
            weights = weights / weights.mean().clamp(min=torch.finfo(weights.dtype).tiny)
        return self._loss(scores, positive_mask, weights)

    def pop_recorded(self) -> dict[str, float]:
        """caption id -> confidence of the calls recorded since the last pop (later calls win), then clear."""
        result = {}
        for ids, weights in self.recorded:
            result.update(zip(ids, weights.tolist(), strict=True))
        self.recorded = []
        return result


class ConfidenceLogger(L.Callback):
    """Each training epoch: summary statistics of the DCOT confidences (mean, std, min, quantiles, curriculum
    lambda) to the logger, and a histogram where the logger's experiment supports one (W&B ``log``,
    TensorBoard ``add_histogram``; CSV cannot).
    The epoch's caption id -> confidence map is kept in ``last_epoch``."""

    def __init__(self, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)):
        self.quantiles = tuple(quantiles)
        self.last_epoch: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        objectives = [m for m in pl_module.modules() if isinstance(m, DCOTObjective)]
        if not objectives:
            return
        self.last_epoch = {}
        for objective in objectives:
            self.last_epoch.update(objective.pop_recorded())
        if not self.last_epoch:
            return
        values = torch.tensor(list(self.last_epoch.values()))
        stats = {
            "mean": values.mean(),
            "std": values.std(unbiased=False),
            "min": values.min(),
            "lambda": torch.tensor(objectives[0].view_weight),
        }
        for q in self.quantiles:
            stats[f"q{round(100 * q)}"] = values.quantile(q)
        for name, value in stats.items():
            pl_module.log(f"train/confidence_{name}", float(value), on_epoch=True)
        self._histogram(trainer, values)

    def _histogram(self, trainer: L.Trainer, values: Tensor) -> None:
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram"):
                experiment.add_histogram("train/confidence", values, trainer.current_epoch)
            elif type(logger).__name__ == "WandbLogger":
                import wandb

                experiment.log({"train/confidence": wandb.Histogram(values.numpy()), "epoch": trainer.current_epoch})


class DCOT(DualEncoderBaseline):
    """The dual encoder trained with :class:`DCOTObjective` (default ``DCOTObjective()``; any objective may be
    injected) and a :class:`ConfidenceLogger`; every other argument is the baseline's."""

    def __init__(self, visual_dim: int, objective: PairObjective | None = None, **kwargs):
        super().__init__(visual_dim, objective=objective if objective is not None else DCOTObjective(), **kwargs)

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), ConfidenceLogger()]
