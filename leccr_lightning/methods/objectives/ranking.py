"""Image-text ranking objectives as plug-ins: SelHN (RVSE++), unified pair loss, BCLS, Listwise ITR (S-NDCG).

Each is a ``PairObjective`` any retrieval method takes as ``objective:`` (the baseline, RVSE++, the CCR methods).
The score matrix has texts as rows and visual items as columns; "t2i" is the rows, "i2t" the columns (``scores.T``).
Graded relevance comes from an in-batch provider (``metrics/relevance.py``) reading the visual index of the rows and
the rows' caption ids and tokens from the local batch (``ROW_TEXTS``: so these objectives score per-rank batches); a
file-backed provider is bound to the DataModule at fit start (``bind_data``, called by the VSE methods).
"""

from __future__ import annotations

from torch import Tensor

from leccr_lightning.losses import (
    hinge_triplet,
    kendall_rank_loss,
    smooth_ndcg_loss,
    unified_pair_loss,
)
from leccr_lightning.methods.objectives.base import FULL_SCORES, ROW_TEXTS, PairContext, PairObjective
from leccr_lightning.metrics.relevance import BatchTexts, InBatchRelevance, TokenOverlapRelevance

BINARY_MINING = ("hardest", "soft", "selective", "all_mean")


def batch_texts(context: PairContext) -> BatchTexts:
    """The provider's view of a pair: the visual index of every row and the rows' caption ids and tokens."""
    return BatchTexts(index=context.index, **context.row_texts())


def binary_term(context: PairContext, margin: float, mining: str, selective_eps: float, soft_tau: float) -> Tensor:
    """1/2 (mean_t2i + mean_i2t) of the hinge triplet with ``mining`` (the released codes' batch reduction)."""
    return context.both_directions(
        hinge_triplet,
        weights=(0.5, 0.5),
        margin=margin,
        mining=mining,
        selective_eps=selective_eps,
        soft_tau=soft_tau,
        reduction="mean",
    )


class SelHNObjective(PairObjective):
    """RVSE++ T-SelHN (itr spec §4.2, AAA-Zheng/RVSEPP ``loss.py:5-60``): per anchor, the mean of the hinge costs
    [m + s_n - s_p]_+ over all negatives when |s_p - max_n s_n| < ``selective_eps`` (decided on detached scores),
    else the hardest negative's cost; L = 1/2 (mean_t2i + mean_i2t). m = 0.2, eps = 0.01 (``train.py:25-28``).

    Differences from the official code: none in the formula. The official code takes only the diagonal as positive
    (a second caption of the same image in the batch is a negative, averaged over B - 1); we do so with the method's
    ``mask_same_item: false`` (the RVSE++ preset), while ``mask_same_item: true`` excludes such false negatives.
    """

    def __init__(self, margin: float = 0.2, selective_eps: float = 0.01):
        super().__init__()
        self.margin, self.selective_eps = margin, selective_eps

    def forward(self, context: PairContext) -> Tensor:
        return binary_term(context, self.margin, "selective", self.selective_eps, 0.01)


class UnifiedObjective(PairObjective):
    """Unified pair-similarity loss (itr spec §7.2): per anchor tau * log(1 + sum_n exp((s_n - s_p + m) / tau)),
    L = 1/2 (mean_t2i + mean_i2t); the single-view ``UnifiedLoss`` of AAA-Zheng/MV-VSE ``model.py:191-282`` (k = 1,
    ``--loss unified_max``), m = 0.2, tau = 0.01 (``train.py:44-49``).

    Differences from the official code (each below 1e-10 of the loss): the official code keeps the positive inside
    the log-sum-exp at -1 (a term exp(-1/tau) = e^-100, ``model.py:60-62``) and computes softplus with torch's
    threshold 20 (linear above, an error of at most tau e^-20); positives as in ``SelHNObjective`` (diagonal only
    with ``mask_same_item: false``).
    """

    def __init__(self, margin: float = 0.2, tau: float = 0.01):
        super().__init__()
        self.margin, self.tau = margin, tau

    def forward(self, context: PairContext) -> Tensor:
        return context.both_directions(
            unified_pair_loss,
            weights=(0.5, 0.5),
            margin=self.margin,
            tau=self.tau,
            reduction="mean",
        )


class _RelevanceObjective(PairObjective):
    """An objective with a binary term and a term on in-batch graded relevance r[text, visual]."""

    reads = frozenset({ROW_TEXTS, FULL_SCORES})

    def __init__(self, relevance: InBatchRelevance | None, legacy_untransposed: bool):
        super().__init__()
        self.relevance = relevance if relevance is not None else TokenOverlapRelevance()
        self.legacy_untransposed = legacy_untransposed

    def bind_data(self, datamodule) -> None:
        """Let a file-backed relevance provider find its rows in the DataModule (``CaptionEmbeddingRelevance``)."""
        bind = getattr(self.relevance, "bind_data", None)
        if bind is not None:
            bind(datamodule)

    def relevance_pair(self, context: PairContext) -> tuple[Tensor, Tensor]:
        """The relevance read by the t2i rows (texts ranking visuals) and by the i2t rows (visuals ranking texts).

        Correct: r [texts, visuals] and r^T. ``legacy_untransposed`` reproduces the released code, whose one matrix
        relevance[image, text] = r^T serves both directions, so its text->image side reads r^T (Listwise_ITR
        ``model.py:161-166,228``, ITM_CLS ``model.py:133-156``).
        """
        relevance = self.relevance(context.positives, batch_texts(context)).to(context.positives.device)
        return (relevance.T if self.legacy_untransposed else relevance), relevance.T


class BCLSObjective(_RelevanceObjective):
    """BCLS (itr spec §5): binary triplet + ``kendall_weight`` * Kendall rank loss on continuous labels, the
    ``RCLoss`` of AAA-Zheng/ITM_CLS ``model.py:80-163`` (the released code of BCLS).

    L = 1/2 (T(S) + T(S^T)) + w * 1/2 (K(S, r) + K(S^T, r^T)) with T the hardest-negative triplet (m = 0.2,
    ``model.py:109-118``) and K = sum [s_j - s_i]_+ over the pairs with r_i - r_j > ``gap`` 0.3, divided by their
    number (``model.py:136-159``), w = 1 (``model.py:161``). The labels come from ``relevance``: the paper's
    caption-embedding labels are ``CaptionEmbeddingRelevance(mapping="cos")`` (the BCLS preset); the default
    ``TokenOverlapRelevance("cos")`` is a file-free stand-in for tests and the tiny runs.
    ``binary_mining="soft"`` is the paper's Triplet-SN as we recall it ([m - s_p + tau LSE_n(s_n / tau)]_+,
    ``soft_tau``); ``form="paper"``, ``window`` and ``hard_mining`` are our reading of the paper's smooth Kendall
    loss and SW-HS sampling (itr spec §5.4, [recall]); the released code uses none of them.

    Differences from the official code: ``legacy_untransposed`` (default off) reproduces the t2i side reading the
    image-by-text labels untransposed (the BCLS preset sets it); positives are the diagonal only with the method's
    ``mask_same_item: false`` (the preset); a batch without any pair above the gap gives 0 instead of 0/0 = NaN; the
    ``--label image`` variant (image-embedding labels, ``model.py:121-123``) is not provided.
    """

    def __init__(
        self,
        margin: float = 0.2,
        binary_mining: str = "hardest",
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
        binary = binary_term(context, self.margin, self.binary_mining, self.selective_eps, self.soft_tau)
        rows, columns = self.relevance_pair(context)
        kendall = 0.5 * (
            kendall_rank_loss(scores, rows, **self.kendall_args)
            + kendall_rank_loss(scores.T, columns, **self.kendall_args)
        )
        return binary + self.kendall_weight * kendall


class ListwiseObjective(_RelevanceObjective):
    """Listwise ITR (itr spec §6.2), the ``TripletSNDCGLoss`` of AAA-Zheng/Listwise_ITR ``model.py:123-257``:
    L = (1 - lambda) * Triplet-HN + lambda * 1/2 (L_list(S, r) + L_list(S^T, r^T)), L_list = mean_q (1 - S-NDCG_q)
    with sigmoid-smoothed ranks (tau = 0.01, ``train.py:36``), no cut-off (``k=None``), gains 2^r - 1 and ideal
    ranks shared by tied relevances (``ideal_ties="shared"``, ``model.py:180-189``). The relevance is the RSC
    module's (1 + max_k cos) / 2 over the image's reference captions: ``CaptionEmbeddingRelevance(mapping=
    "shifted")`` (the Listwise preset); the default ``TokenOverlapRelevance("shifted")`` is a file-free stand-in.

    Differences from the official code: ``sndcg_weight`` (lambda) is read but never declared in the released
    ``train.py`` (itr spec §6.2), so 0.5 is our choice, not the paper's; ``legacy_untransposed`` (default off)
    reproduces the t2i side reading the image-by-text relevance (and its ideal DCG) untransposed (the preset sets
    it); the released sigmoid clamps its exponent to +-50 (``model.py:112-120``; ours differs by < e^-50);
    positives as in ``SelHNObjective``.
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
        triplet = binary_term(context, self.margin, "hardest", 0.0, 0.01)
        rows, columns = self.relevance_pair(context)
        listwise = 0.5 * (
            smooth_ndcg_loss(scores, rows, **self.ndcg_args) + smooth_ndcg_loss(scores.T, columns, **self.ndcg_args)
        )
        return (1.0 - self.sndcg_weight) * triplet + self.sndcg_weight * listwise
