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
    injected) and a :class:`ConfidenceLogger`; every other argument is the baseline's."""

    def __init__(self, visual_dim: int, objective: PairObjective | None = None, **kwargs):
        super().__init__(visual_dim, objective=objective if objective is not None else DCOTObjective(), **kwargs)

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), ConfidenceLogger()]
