"""DCOT: dual-view curricular optimal transport against noisy MT correspondence (ccr_methods §5, [recon]).

The dual encoder of the MT baseline trained with DCOT's confidence-weighted objective
(``methods/objectives/dcot.py``: Sinkhorn plan over the curricular cross-lingual + cross-modal cost, per-pair
confidences w_i = B P*_ii weighting the (t, v) alignment terms), with the confidence statistics logged each epoch
(``callbacks/confidence.py``).
"""

from __future__ import annotations

from leccr_lightning.callbacks.confidence import ConfidenceLogger
from leccr_lightning.methods.baseline import DualEncoderBaseline
from leccr_lightning.methods.objectives import DCOTObjective, PairObjective


class DCOT(DualEncoderBaseline):
    """The dual encoder trained with :class:`DCOTObjective` (default ``DCOTObjective()``; any objective may be
    injected) and a :class:`ConfidenceLogger`; every other argument is the baseline's.

    Reconstructed choices (no official code; the paper body was not available, ccr_methods §5.2), with defaults:
        - Costs on detached unit embeddings: C^L = 1 - cos(s, t) (cross-lingual), C^M = 1 - cos(v, t) (cross-modal).
        - Curriculum: C = lambda C^L + (1 - lambda) C^M with lambda from 1.0 to 0.5, linear in training progress
          (``curriculum_mode="progress"``); or lambda = r^L / (r^L + r^M) from EMAs (momentum 0.9) of each view's
          in-batch accuracy (``"accuracy"``; the EMA is saved in checkpoints).
        - Plan: entropic OT with uniform marginals, eps 0.05, at most 100 log-domain Sinkhorn iterations, tol 1e-6,
          float64 (POT).
        - Confidence w_i = B P*_ii, divided by its batch mean, 1 during the first 10 % of training (``warmup``).
        - Use: per-query weights on the (t, v) alignment loss only, both directions: VSE++ hardest triplet (margin 0.2,
          sum) in the paper-scale recipes, symmetric InfoNCE (0.07) in the tiny one; the (s, v) term is unweighted.
        - Recipes: the NRCCR-like recipe of configs/model/dcot.yaml (mBERT layers 3-11 / 5-11, NRCCR's visual encoders,
          1536-d with BatchNorm and dropout 0.2, Adam 1e-4, clip 2.0, MT weight 1.0), selection on validation SumR.
    """

    def __init__(self, visual_dim: int, objective: PairObjective | None = None, **kwargs):
        super().__init__(visual_dim, objective=objective if objective is not None else DCOTObjective(), **kwargs)

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), ConfidenceLogger()]
