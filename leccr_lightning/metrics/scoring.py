"""Scorers: callables mapping a chunk of query views and the gallery views to a [chunk, G] score block.

A "view" is one named embedding tensor of the queries or of the gallery (e.g. ``target`` captions,
``target2en`` translations, LECCR slots); views are sliced on dim 0 to make query chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

Views = Mapping[str, Tensor]
Scorer = Callable[[Views, Views], Tensor]
ALIGNED_COLUMNS = 16
"""Score rows are laid out on multiples of this many columns (64 bytes of fp32): MKL writes a block whose rows are not
64-byte multiples 10-30% slower (measured at 1,024 queries x 1,500 / 4,335 / 5,000 items, d = 1,024). ``DotScorer``
pads its rows; the ranking core also cuts pieces and bands on these multiples, for scorers with GEMMs of their own."""
ITEM_MAJOR_DEVICES = ("cpu",)
"""Devices where ``DotScorer`` computes a block as ``items @ queries.T`` and returns its transpose: on the 2-core
machine MKL's item-major product was faster than ``queries @ items.T`` (d = 1,024: 9% over MSCOCO-5K in pieces of
1,000 queries x 4,096 items, 13% / 27% for the whole MSCOCO-5K / VATEX matrices); the fused CPU counting kernel
reads both layouts. GPUs keep the query-major product (unmeasured there)."""


def slice_views(views: Views, start: int, stop: int) -> dict[str, Tensor]:
    """Rows ``start:stop`` of every view."""
    return {name: view[start:stop] for name, view in views.items()}


def _view(views: Views, name: str, role: str) -> Tensor:
    """The view ``name`` of ``views``, or a ValueError listing the views that exist."""
    if name not in views:
        raise ValueError(f"{role} view {name!r} is missing; available views: {sorted(views)}")
    return views[name]


def minmax_normalize(
    scores: Tensor, lo: float | Tensor | None = None, hi: float | Tensor | None = None, dim: int | None = None
) -> Tensor:
    """(S - lo) / (hi - lo) in the dtype of ``scores``, zero where hi == lo (NRCCR ``norm_score``, LECCR/NRCCR mm()).

    ``lo`` and ``hi`` default to the minimum and maximum of ``scores``: over the whole tensor (``dim=None``) or along
    ``dim``; give both for ranges known beforehand (chunked fused scoring). Order preserving and invariant to positive
    affine maps of S. Decided on the device (no host synchronisation), so fused scoring on a GPU runs without stalls.
    """
    if (lo is None) != (hi is None):
        raise ValueError("minmax_normalize takes both lo and hi, or neither (then the range of the scores)")
    if lo is None:
        if dim is None:
            lo, hi = scores.min(), scores.max()
        else:
            lo, hi = scores.amin(dim=dim, keepdim=True), scores.amax(dim=dim, keepdim=True)
    lo = torch.as_tensor(lo, dtype=scores.dtype, device=scores.device)
    span = torch.as_tensor(hi, dtype=scores.dtype, device=scores.device) - lo
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    return torch.where(span > 0, (scores - lo) / torch.where(span > 0, span, torch.ones_like(span)), zero)


def _padded_product(left: Tensor, right: Tensor) -> Tensor:
    """``left @ right.T`` written into rows padded to a multiple of ``ALIGNED_COLUMNS`` (a view of them)."""
    width = right.shape[0]
    padded = left.new_empty(left.shape[0], width + -width % ALIGNED_COLUMNS)
    return torch.mm(left, right.T, out=padded[:, :width])


class DotScorer:
    """score = queries[query_view] @ gallery[gallery_view].T (cosine for unit-norm embeddings).

    Without autograd, the block is written into rows padded to ``ALIGNED_COLUMNS`` and returned as a view of them,
    which MKL writes faster. On ``ITEM_MAJOR_DEVICES`` those rows are the items' (``items @ queries.T``, returned
    transposed: a [queries, items] view stored column after column); elsewhere and under autograd they are the
    queries'. Both orientations compute each score as one d-long dot product; they can differ in its last bit.
    """

    def __init__(self, query_view: str = "query", gallery_view: str = "gallery") -> None:
        self.query_view = query_view
        self.gallery_view = gallery_view

    def __call__(self, queries: Views, gallery: Views) -> Tensor:
        """[chunk, G] dot products of the two named views."""
        query = _view(queries, self.query_view, "query")
        items = _view(gallery, self.gallery_view, "gallery")
        if query.dim() != 2 or items.dim() != 2 or query.shape[1] != items.shape[1]:
            raise ValueError(
                f"DotScorer needs [N, D] views with the same D: query view {self.query_view!r} is "
                f"{list(query.shape)}, gallery view {self.gallery_view!r} is {list(items.shape)}"
            )
        if torch.is_grad_enabled() and (query.requires_grad or items.requires_grad):
            return query @ items.T
        if query.device.type in ITEM_MAJOR_DEVICES:
            return _padded_product(items, query).T
        return _padded_product(query, items)


class FusedScorer:
    """score = sum_i w_i * minmax_i(S_i) over scorer terms (spec ccr_methods §2.4 NRCCR translate-test,
    §3.5 LECCR video slot fusion).

    With ``normalize`` each term is min-max normalised with its global minimum and maximum over the whole
    query x gallery matrix (NRCCR ``norm_score``), which ``fit`` finds in a first chunked pass; without it
    the raw terms are summed and ``fit`` does nothing. E.g. NRCCR image test:
    ``FusedScorer([(DotScorer("target2en"), 0.5), (DotScorer("target"), 0.5)])``.
    """

    def __init__(self, terms: Sequence[tuple[Scorer, float]], normalize: bool = True) -> None:
        terms = list(terms)
        if not terms:
            raise ValueError("FusedScorer needs at least one (scorer, weight) term")
        for index, term in enumerate(terms):
            if len(term) != 2 or not callable(term[0]) or not isinstance(term[1], int | float):
                raise ValueError(f"FusedScorer term {index} must be (callable scorer, float weight), got {term!r}")
        self.terms = [(scorer, float(weight)) for scorer, weight in terms]
        self.normalize = normalize
        self.ranges: list[tuple[Tensor, Tensor]] | None = None

    def fit(self, queries: Views, gallery: Views, chunk_size: int | None = None) -> FusedScorer:
        """Global (min, max) of every term over all queries, scored in chunks of ``chunk_size`` queries."""
        if not self.normalize:
            return self
        num_queries = next(iter(queries.values())).shape[0]
        step = chunk_size or num_queries
        lows: list[Tensor | None] = [None] * len(self.terms)
        highs: list[Tensor | None] = [None] * len(self.terms)
        for start in range(0, num_queries, step):
            chunk = slice_views(queries, start, start + step)
            for index, (scorer, _) in enumerate(self.terms):
                lo, hi = torch.aminmax(scorer(chunk, gallery).float())
                lows[index] = lo if lows[index] is None else torch.minimum(lows[index], lo)
                highs[index] = hi if highs[index] is None else torch.maximum(highs[index], hi)
        self.ranges = list(zip(lows, highs, strict=True))
        return self

    def __call__(self, queries: Views, gallery: Views) -> Tensor:
        """[chunk, G] fused scores; requires ``fit`` first when ``normalize``."""
        if self.normalize and self.ranges is None:
            raise ValueError("FusedScorer: call fit(queries, gallery, chunk_size) first (global min-max)")
        fused = None
        for index, (scorer, weight) in enumerate(self.terms):
            term = scorer(queries, gallery).float()
            if self.normalize:
                term = minmax_normalize(term, *self.ranges[index])
            fused = weight * term if fused is None else fused + weight * term
        return fused


def soft_jaccard(rows: Tensor, columns: Tensor, block_elements: int = 2**24) -> Tensor:
    """Soft Jaccard similarity [R, C] of non-negative vectors: J(a, b) = sum_k min(a_k, b_k) / sum_k max(a_k, b_k)
    (RIVRL's concept space, LiJiaBei-7/rivrl:loss.py:65-73; no epsilon, so a pair of all-zero vectors is undefined).

    Rows are taken in blocks so that no temporary holds more than ``block_elements`` entries of [rows, C, K].
    """
    if rows.dim() != 2 or columns.dim() != 2 or rows.shape[1] != columns.shape[1]:
        raise ValueError(
            f"soft_jaccard needs [R, K] and [C, K] inputs, got {list(rows.shape)} and {list(columns.shape)}"
        )
    step = max(1, block_elements // max(1, columns.numel()))
    blocks = []
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step, None, :]
        blocks.append(torch.minimum(block, columns[None]).sum(-1) / torch.maximum(block, columns[None]).sum(-1))
    return torch.cat(blocks) if blocks else rows.new_zeros((0, columns.shape[0]))


class JaccardScorer:
    """score = soft_jaccard(queries[query_view], gallery[gallery_view]) (RIVRL concept-space scores)."""

    def __init__(self, query_view: str, gallery_view: str) -> None:
        self.query_view = query_view
        self.gallery_view = gallery_view

    def __call__(self, queries: Views, gallery: Views) -> Tensor:
        return soft_jaccard(_view(queries, self.query_view, "query"), _view(gallery, self.gallery_view, "gallery"))
