"""Image-text ranking objectives as plug-ins: SelHN (RVSE++), unified pair loss, BCLS, Listwise ITR (S-NDCG).

Each is a ``PairObjective`` any retrieval method takes as ``objective:`` (the baseline, RVSE++, the CCR methods).
The score matrix has texts as rows and visual items as columns; "t2i" is the rows, "i2t" the columns (``scores.T``).
Graded relevance comes from an in-batch provider (``metrics/relevance.py``) reading the visual index of the rows and
the rows' caption ids and tokens from the local batch (``ROW_TEXTS``: so these objectives score per-rank batches).
"""

from __future__ import annotations

from torch import Tensor

from leccr_lightning.losses import (
    bidirectional,
    hinge_triplet,
    kendall_rank_loss,
    smooth_ndcg_loss,
    unified_pair_loss,
)
from leccr_lightning.methods.objectives.base import ROW_TEXTS, PairContext, PairObjective
from leccr_lightning.metrics.relevance import BatchTexts, InBatchRelevance, TokenOverlapRelevance

BINARY_MINING = ("hardest", "soft", "selective", "all_mean")


def batch_texts(context: PairContext) -> BatchTexts:
    """The provider's view of a pair: the visual index of every row and the rows' caption ids and tokens."""
    return BatchTexts(index=context.index, **context.row_texts())


def binary_term(
    scores: Tensor, positive_mask: Tensor, margin: float, mining: str, selective_eps: float, soft_tau: float
) -> Tensor:
    """1/2 (mean_t2i + mean_i2t) of the hinge triplet with ``mining`` (the released codes' batch reduction)."""
    return bidirectional(
        hinge_triplet,
        scores,
        positive_mask,
        weights=(0.5, 0.5),
        margin=margin,
        mining=mining,
        selective_eps=selective_eps,
        soft_tau=soft_tau,
        reduction="mean",
    )


class SelHNObjective(PairObjective):
    """RVSE++ T-SelHN (itr spec §4.2): per anchor, the mean over all negatives when |s_p - max_n s_n| <
    ``selective_eps`` (detached), else the hardest negative; L = 1/2 (mean_t2i + mean_i2t). m = 0.2, eps = 0.01."""

    def __init__(self, margin: float = 0.2, selective_eps: float = 0.01):
        super().__init__()
        self.margin, self.selective_eps = margin, selective_eps

    def forward(self, context: PairContext) -> Tensor:
        return binary_term(context.scores, context.positives, self.margin, "selective", self.selective_eps, 0.01)


class UnifiedObjective(PairObjective):
    """Unified pair-similarity loss (itr spec §7.2): per anchor tau * log(1 + sum_n exp((s_n - s_p + m) / tau)),
    L = 1/2 (mean_t2i + mean_i2t); MV-VSE ``UnifiedLoss`` defaults m = 0.2, tau = 0.01."""

    def __init__(self, margin: float = 0.2, tau: float = 0.01):
        super().__init__()
        self.margin, self.tau = margin, tau

    def forward(self, context: PairContext) -> Tensor:
        return bidirectional(
            unified_pair_loss,
            context.scores,
            context.positives,
            weights=(0.5, 0.5),
            margin=self.margin,
            tau=self.tau,
            reduction="mean",
        )


class _RelevanceObjective(PairObjective):
    """An objective with a binary term and a term on in-batch graded relevance r[text, visual]."""

    reads = frozenset({ROW_TEXTS})

    def __init__(self, relevance: InBatchRelevance | None, legacy_untransposed: bool):
        super().__init__()
        self.relevance = relevance if relevance is not None else TokenOverlapRelevance()
        self.legacy_untransposed = legacy_untransposed

    def relevance_pair(self, context: PairContext) -> tuple[Tensor, Tensor]:
        """r for the t2i rows and for the i2t rows: r^T, or r itself under ``legacy_untransposed`` (the released
        Listwise_ITR / ITM_CLS quirk, itr spec §5.3, §6.1)."""
        relevance = self.relevance(context.positives, batch_texts(context)).to(context.positives.device)
        return relevance, relevance if self.legacy_untransposed else relevance.T


class BCLSObjective(_RelevanceObjective):
    """BCLS (itr spec §5): binary triplet + ``kendall_weight`` * Kendall rank loss on continuous labels.

    L = 1/2 (T(S) + T(S^T)) + w * 1/2 (K(S, r) + K(S^T, r^T)). ``binary_mining="soft"`` is the paper's Triplet-SN
    [recall] ([m - s_p + tau LSE_n(s_n / tau)]_+, ``soft_tau`` 0.01); the released ITM_CLS uses ``"hardest"``.
    The Kendall term (``losses.kendall_rank_loss``): label gap 0.3, ``form="hinge"`` (released) or ``"paper"``
    [recall] with ``surrogate_tau``; SW-HS [recall] via ``window`` and ``hard_mining``. Relevance defaults to
    in-batch token-overlap cosine (``TokenOverlapRelevance("cos")``); the paper uses caption-embedding labels
    (``CaptionEmbeddingRelevance(mapping="cos")``).
    """

    def __init__(
        self,
        margin: float = 0.2,
        binary_mining: str = "soft",
        soft_tau: float = 0.01,
        selective_eps: float = 0.01,
        kendall_weight: float = 1.0,
        gap: float = 0.3,
        form: str = "hinge",
        kendall_margin: float = 0.0,
        surrogate_tau: float = 0.1,
        window: int | None = None,
        hard_mining: bool = False,
        relevance: InBatchRelevance | None = None,
        legacy_untransposed: bool = False,
    ):
        if binary_mining not in BINARY_MINING:
            raise ValueError(f"binary_mining: expected one of {BINARY_MINING}, got {binary_mining!r}")
        super().__init__(relevance if relevance is not None else TokenOverlapRelevance("cos"), legacy_untransposed)
        self.margin, self.binary_mining, self.soft_tau = margin, binary_mining, soft_tau
        self.selective_eps, self.kendall_weight = selective_eps, kendall_weight
        self.kendall_args = {
            "gap": gap,
            "form": form,
            "margin": kendall_margin,
            "surrogate_tau": surrogate_tau,
            "window": window,
            "hard_mining": hard_mining,
        }

    def forward(self, context: PairContext) -> Tensor:
        scores = context.scores
        binary = binary_term(
            scores, context.positives, self.margin, self.binary_mining, self.selective_eps, self.soft_tau
        )
        rows, columns = self.relevance_pair(context)
        kendall = 0.5 * (
            kendall_rank_loss(scores, rows, **self.kendall_args)
            + kendall_rank_loss(scores.T, columns, **self.kendall_args)
        )
        return binary + self.kendall_weight * kendall


class ListwiseObjective(_RelevanceObjective):
    """Listwise ITR (itr spec §6.2): L = (1 - lambda) * Triplet-HN + lambda * 1/2 (L_list(S, r) + L_list(S^T, r^T)),
    L_list = mean_q (1 - S-NDCG_q) with sigmoid-smoothed ranks (tau = 0.01), no cut-off (``k=None``), gains
    2^r - 1 and the released code's shared-tie ideal ranks (``ideal_ties="shared"``).

    ``sndcg_weight`` (lambda) has no default in the released code (itr spec §6.2); 0.5 here is a [recall] sweep
    default. Relevance defaults to in-batch token-overlap (1 + cos) / 2; the paper's RSC uses caption embeddings
    (``CaptionEmbeddingRelevance(mapping="shifted")``).
    """

    def __init__(
        self,
        margin: float = 0.2,
        tau: float = 0.01,
        sndcg_weight: float = 0.5,
        k: int | None = None,
        gain: str = "exp2",
        ideal_ties: str = "shared",
        relevance: InBatchRelevance | None = None,
        legacy_untransposed: bool = False,
    ):
        if not 0.0 <= sndcg_weight <= 1.0:
            raise ValueError(f"sndcg_weight: expected a value in [0, 1], got {sndcg_weight}")
        super().__init__(relevance, legacy_untransposed)
        self.margin, self.sndcg_weight = margin, sndcg_weight
        self.ndcg_args = {"tau": tau, "k": k, "gain": gain, "ideal_ties": ideal_ties}

    def forward(self, context: PairContext) -> Tensor:
        scores = context.scores
        triplet = binary_term(scores, context.positives, self.margin, "hardest", 0.0, 0.01)
        rows, columns = self.relevance_pair(context)
        listwise = 0.5 * (
            smooth_ndcg_loss(scores, rows, **self.ndcg_args) + smooth_ndcg_loss(scores.T, columns, **self.ndcg_args)
        )
        return (1.0 - self.sndcg_weight) * triplet + self.sndcg_weight * listwise
