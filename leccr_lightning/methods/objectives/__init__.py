"""Alignment objectives a retrieval method takes as a constructor argument (``objective: class_path ...`` in YAML).

An objective maps a typed ``PairContext`` (score matrix, positives, the step's embeddings, visual index, progress,
batch, temperature) to a scalar loss. Objectives are ``nn.Module`` s so that a learnable temperature lives in the
method layer, while the loss formulas stay pure in ``losses/``.
"""

from leccr_lightning.methods.objectives.base import (
    FULL_SCORES,
    ROW_TEXTS,
    TEMPERATURE,
    AlignmentStep,
    PairContext,
    PairObjective,
    check_objective,
    embedding,
)
from leccr_lightning.methods.objectives.contrastive import InfoNCEObjective, MethodTemperatureInfoNCE, TripletObjective
from leccr_lightning.methods.objectives.dcot import DCOTObjective
from leccr_lightning.methods.objectives.ranking import (
    BCLSObjective,
    ListwiseObjective,
    SelHNObjective,
    UnifiedObjective,
)

__all__ = [
    "FULL_SCORES",
    "ROW_TEXTS",
    "TEMPERATURE",
    "AlignmentStep",
    "BCLSObjective",
    "DCOTObjective",
    "InfoNCEObjective",
    "ListwiseObjective",
    "MethodTemperatureInfoNCE",
    "PairContext",
    "PairObjective",
    "SelHNObjective",
    "TripletObjective",
    "UnifiedObjective",
    "check_objective",
    "embedding",
]
