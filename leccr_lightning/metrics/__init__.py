"""Retrieval metrics: counting core (``ranking``), scorers (``scoring``), torchmetrics ``retrieval``."""

from leccr_lightning.metrics.ranking import (
    RetrievalRanks,
    ndcg_at_k,
    retrieval_report,
    retrieval_report_from_embeddings,
    retrieval_report_from_views,
)
from leccr_lightning.metrics.retrieval import RetrievalMetric
from leccr_lightning.metrics.scoring import DotScorer, FusedScorer, minmax_normalize

__all__ = [
    "DotScorer",
    "FusedScorer",
    "RetrievalMetric",
    "RetrievalRanks",
    "minmax_normalize",
    "ndcg_at_k",
    "retrieval_report",
    "retrieval_report_from_embeddings",
    "retrieval_report_from_views",
]
