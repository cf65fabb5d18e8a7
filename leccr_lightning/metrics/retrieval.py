"""``RetrievalMetric``: a torchmetrics ``Metric`` accumulating query and gallery embeddings (DDP-aware).

Each rank appends the embeddings it encoded together with their integer positions in the split's query
and gallery lists; torchmetrics gathers the uneven per-rank lists (``dist_reduce_fx="cat"``); ``compute``
drops the duplicates that a ``DistributedSampler`` pads in (stable sort by position, first occurrence
kept, spec ecosystem B2) and scores in chunks, so 1 and N processes give identical numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from leccr_lightning.metrics.protocols import ndcg_report_from_views
from leccr_lightning.metrics.ranking import (
    RetrievalRanks,
    retrieval_report_from_views,
    validate_chunk_size,
    validate_ks,
)
from leccr_lightning.metrics.scoring import DotScorer, Views

ROLES = ("query", "gallery")


def _compacted(parts: list[Tensor] | Tensor) -> Tensor:
    """A "cat" list state as one tensor, rewritten in place as a one-element list (an already gathered tensor is
    returned as is). The parts are copied from the last and freed one by one, so compacting the gallery embeddings
    needs one part more than the embeddings, not a second copy of them."""
    if isinstance(parts, Tensor):
        return parts
    if not parts:
        raise ValueError("RetrievalMetric: no samples to concatenate")
    if len(parts) > 1:
        rows = sum(part.shape[0] for part in parts)
        out = parts[-1].new_empty((rows, *parts[-1].shape[1:]))
        while parts:
            part = parts.pop()
            rows -= part.shape[0]
            out[rows : rows + part.shape[0]] = part
            del part
        parts.append(out)
    return parts[0]


def _unique_positions(positions: Tensor, role: str) -> Tensor | None:
    """Indices keeping the first occurrence of each position, in position order (None when the positions already
    are 0..N-1 in order, so nothing needs to be moved); positions must cover 0..N-1."""
    order = torch.sort(positions, stable=True).indices
    ordered = positions[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    unique = ordered[first]
    expected = torch.arange(unique.numel(), device=unique.device)
    gaps = (unique != expected).nonzero()
    if gaps.numel():
        missing = int(expected[int(gaps[0])])
        raise ValueError(
            f"RetrievalMetric: {role} position {missing} is missing (positions must cover 0..N-1; got "
            f"{unique.numel()} distinct positions, largest {int(unique[-1])})"
        )
    keep = order[first]
    if keep.numel() == positions.numel() and bool((keep == expected).all()):
        return None
    return keep


class RetrievalMetric(Metric):
    """Text->visual and visual->text retrieval report (``retrieval_report`` keys) over a whole eval split.

    ``update(role, positions, views, targets)``: ``role="query"`` with ``positions`` = rows in the split's
    query list and ``targets`` = each query's gallery position (long); ``role="gallery"`` with
    ``positions`` = rows in the gallery list. ``views`` is a mapping of named embeddings or a plain tensor
    (-> ``{query_view: t}`` / ``{gallery_view: t}``). Every rank must update both roles with the same view
    names (a ``DistributedSampler`` gives each rank at least one batch). ``compute`` returns a dict of
    python floats. Use ``update``/``compute``; ``forward`` on a single batch has gaps in the positions.
    ``scorer`` defaults to ``DotScorer(query_view, gallery_view)``; ``chunk_size`` as in
    ``retrieval_report_from_views``. With a ``relevance`` provider (query positions, gallery positions ->
    graded relevance block, e.g. ``relevance.PrecomputedRelevance``) the report adds ``t2v_ndcg@{ndcg_k}`` and
    ``v2t_ndcg@{ndcg_k}`` (``protocols.ndcg_report_from_views``, chunked; TERAN k = 25, itr spec §9.3).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        ks: Sequence[int] = (1, 5, 10),
        chunk_size: int | None = None,
        scorer: Callable[[Views, Views], Tensor] | None = None,
        query_view: str = "query",
        gallery_view: str = "gallery",
        relevance: Callable[[Tensor, Tensor], Tensor] | None = None,
        ndcg_k: int = 25,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        validate_chunk_size(chunk_size)
        self.ks = validate_ks(ks)
        self.chunk_size = chunk_size
        self.scorer = scorer if scorer is not None else DotScorer(query_view, gallery_view)
        self.default_view = {"query": query_view, "gallery": gallery_view}
        if not isinstance(ndcg_k, int) or isinstance(ndcg_k, bool) or ndcg_k < 1:
            raise ValueError(f"ndcg_k must be a positive int, got {ndcg_k!r}")
        self.relevance = relevance
        self.ndcg_k = ndcg_k
        self.last_ranks: RetrievalRanks | None = None  # the ranks behind the last compute(), for plots and reports
        self.view_names: dict[str, tuple[str, ...] | None] = {role: None for role in ROLES}
        for role in ROLES:
            self.add_state(f"{role}_positions", default=[], dist_reduce_fx="cat")
        self.add_state("query_targets", default=[], dist_reduce_fx="cat")

    def _view_state(self, role: str, name: str) -> str:
        """Attribute name of the list state holding view ``name`` of ``role``."""
        return f"{role}_view_{name}"

    def _register_views(self, role: str, names: tuple[str, ...]) -> None:
        """Add one list state per view on the first update of a role; later updates must repeat the names."""
        known = self.view_names[role]
        if known is None:
            for name in names:
                self.add_state(self._view_state(role, name), default=[], dist_reduce_fx="cat")
            self.view_names[role] = names
        elif known != names:
            raise ValueError(
                f"RetrievalMetric: {role} views {list(names)} differ from the first update's {list(known)}"
            )

    def update(
        self,
        role: str,
        positions: Tensor,
        views: Mapping[str, Tensor] | Tensor,
        targets: Tensor | None = None,
    ) -> None:
        """Append one batch of ``role`` embeddings at their split positions (and query targets)."""
        if role not in ROLES:
            raise ValueError(f"RetrievalMetric: role must be 'query' or 'gallery', got {role!r}")
        if isinstance(views, Tensor):
            views = {self.default_view[role]: views}
        if positions.dim() != 1 or positions.dtype.is_floating_point:
            raise ValueError(f"RetrievalMetric: {role} positions must be an integer [B] tensor")
        for name, view in views.items():
            if view.shape[0] != positions.numel():
                raise ValueError(
                    f"RetrievalMetric: {role} view {name!r} has {view.shape[0]} rows for {positions.numel()} positions"
                )
        if role == "query":
            if targets is None or targets.shape != positions.shape or targets.dtype.is_floating_point:
                raise ValueError("RetrievalMetric: query updates need integer targets [B] (gallery positions)")
            self.query_targets.append(targets.long())
        elif targets is not None:
            raise ValueError("RetrievalMetric: gallery updates take no targets")
        names = tuple(views)
        self._register_views(role, names)
        getattr(self, f"{role}_positions").append(positions.long())
        for name in names:
            getattr(self, self._view_state(role, name)).append(views[name].detach())

    def _deduplicated(self, role: str) -> tuple[dict[str, Tensor], Tensor | None]:
        """The role's views with padded duplicates dropped, in position order, and the kept indices (None: all, in
        the order given). The list states are compacted in place; nothing is copied when no row moves."""
        names = self.view_names[role]
        positions = getattr(self, f"{role}_positions")
        if names is None or (isinstance(positions, list) and not positions):
            raise ValueError(f"RetrievalMetric: no {role} embeddings were given to update()")
        keep = _unique_positions(_compacted(positions), role)
        views = {name: _compacted(getattr(self, self._view_state(role, name))) for name in names}
        if keep is not None:
            views = {name: view[keep] for name, view in views.items()}
        return views, keep

    def compute(self) -> dict[str, float]:
        """``retrieval_report_from_views`` of the de-duplicated, position-ordered embeddings (floats), plus the
        NDCG keys when a relevance provider is set."""
        queries, keep = self._deduplicated("query")
        gallery, _ = self._deduplicated("gallery")
        targets = _compacted(self.query_targets)
        targets = targets if keep is None else targets[keep]
        report, self.last_ranks = retrieval_report_from_views(
            queries, gallery, targets, self.scorer, self.ks, self.chunk_size, return_ranks=True
        )
        if self.relevance is not None:
            report.update(
                ndcg_report_from_views(queries, gallery, self.relevance, self.scorer, self.ndcg_k, self.chunk_size)
            )
        return report
