"""The objective plug-in contract: a typed ``PairContext`` in, a scalar loss out.

A retrieval method builds one ``PairContext`` per (rows, columns) pair of embeddings it aligns (``RetrievalMethod``
``alignment_step(...).pair(rows, columns)``): the score matrix ``S = rows @ columns^T``, its positive mask (same
visual item), the embeddings of the step by role, the visual index, the training progress, the batch and, where the
method has one, its learnable temperature. An objective declares in ``reads`` the parts of the context beyond the
scores and positives that it needs; a method that cannot provide one of them refuses the objective at construction.

With cross-rank negatives in the local form (``local_loss``), a rank's context scores its own rows against every
rank's columns, and its own columns against every rank's rows (``directions()``): objectives written over the two
directions work unchanged, and an objective that needs the whole square matrix reads ``FULL_SCORES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

TEMPERATURE = "temperature"
ROW_TEXTS = "row_texts"
FULL_SCORES = "full_scores"


def embedding(role: str) -> str:
    """The ``reads`` entry for the embeddings of ``role`` (``visual``, ``source``, ``target``, ...)."""
    return f"embedding:{role}"


@dataclass(frozen=True)
class PairContext:
    """One aligned pair of a training step.

    Attributes:
        scores: [R, C] similarity matrix rows @ columns^T (texts as rows, visual items or texts as columns).
        positives: bool [R, C], true where row and column belong to the same visual item.
        rows, columns: the roles of the two sides (``source``, ``target``, ``back``; ``visual`` for the gallery side).
        embeddings: every embedding of the step by role, [N, d] each (gathered over ranks when the method gathers
            negatives, so rows line up with ``index``).
        index: the visual index of the N items of the step.
        progress: fraction of training done, in [0, 1].
        batch: the local training batch (tokens, caption ids, ...).
        temperature: the method's learnable temperature, or None where it has none.
        gathered: True when the embeddings span every rank; then the local ``batch`` no longer lines up with the rows.
        column_scores, column_positives: in the local form, this rank's columns (as anchors) against every rank's
            rows, [C_local, R]; None in the full form, where the second direction is ``scores.T``.
        sum_scale: the factor (the world size in the local form, else 1) a sum over anchors takes so that the
            DDP-averaged gradients equal those of the sum over every rank's anchors.
    """

    scores: Tensor
    positives: Tensor
    rows: str
    columns: str
    embeddings: Mapping[str, Tensor]
    index: Tensor
    progress: float
    batch: Mapping
    temperature: Tensor | None = None
    gathered: bool = False
    column_scores: Tensor | None = None
    column_positives: Tensor | None = None
    sum_scale: float = 1.0

    def directions(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """((scores, positives) with the rows as anchors, (scores, positives) with the columns as anchors)."""
        if self.column_scores is None:
            return (self.scores, self.positives), (self.scores.T, self.positives.T)
        return (self.scores, self.positives), (self.column_scores, self.column_positives)

    def both_directions(self, loss_fn, weights: tuple[float, float] = (0.5, 0.5), **kwargs) -> Tensor:
        """w0 loss_fn(rows as anchors) + w1 loss_fn(columns as anchors) (``bidirectional`` of ``losses/``, in either
        form)."""
        (rows, row_positives), (columns, column_positives) = self.directions()
        return weights[0] * loss_fn(rows, row_positives, **kwargs) + weights[1] * loss_fn(
            columns, column_positives, **kwargs
        )

    def row_texts(self) -> dict:
        """The rows' token ids and caption ids from the local batch (rows must be texts of this rank)."""
        if self.gathered:
            raise ValueError("the rows' texts are local to each rank; they do not line up with gathered rows")
        tokens = self.batch.get("text", {}).get(self.rows, {})
        return {
            "caption_ids": self.batch.get("caption_ids"),
            "input_ids": tokens.get("input_ids"),
            "attention_mask": tokens.get("attention_mask"),
        }


class PairObjective(nn.Module, ABC):
    """Base of alignment objectives: ``forward(context) -> scalar loss``.

    ``reads``: the parts of the context the objective needs besides ``scores`` and ``positives``: ``embedding(role)``
    entries, ``TEMPERATURE``, ``ROW_TEXTS`` (the rows' tokens and caption ids from the local batch), ``FULL_SCORES``
    (the whole square score matrix, not the local form's two directions).
    """

    reads: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def forward(self, context: PairContext) -> Tensor:
        """The scalar loss of the pair."""


def check_objective(objective: PairObjective, provided: frozenset[str], method: str) -> PairObjective:
    """``objective`` if ``method`` provides everything it reads, else a ValueError naming what is missing."""
    missing = objective.reads - provided
    if missing:
        raise ValueError(
            f"{type(objective).__name__} reads {sorted(missing)} of the pair context, which {method} does not "
            f"provide (it provides {sorted(provided)})"
        )
    return objective


@dataclass(frozen=True)
class AlignmentStep:
    """The embeddings of one training step (gathered once over ranks when the method gathers negatives), from which
    every aligned pair's ``PairContext`` is built.

    In the local form (``local`` holds this rank's own embeddings and ``local_positives`` [B, N] its rows' positives
    among the gathered items), ``pair`` scores this rank's rows against every rank's columns and vice versa, as
    open_clip's local loss does: (W B) x B scores per direction instead of (W B)^2.
    """

    embeddings: Mapping[str, Tensor]
    index: Tensor
    positives: Tensor
    progress: float
    batch: Mapping
    temperature: Tensor | None = None
    gathered: bool = False
    local: Mapping[str, Tensor] | None = None
    local_positives: Tensor | None = None
    world_size: int = 1

    def pair(
        self,
        rows: str,
        columns: str,
        scores: Tensor | None = None,
        similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> PairContext:
        """The context of S = E[rows] @ E[columns]^T (e.g. ``pair("target", "visual")``), of S = similarity(E[rows],
        E[columns]) for another measure (RIVRL's soft Jaccard of concept vectors), or of the method's own ``scores``
        [N, N] of the pair (token-level methods, e.g. ProTA's aggregated token similarities)."""
        for role in (rows, columns):
            if role not in self.embeddings:
                raise KeyError(f"no {role!r} embeddings in this step; it has {sorted(self.embeddings)}")
        common = {
            "rows": rows,
            "columns": columns,
            "embeddings": self.embeddings,
            "index": self.index,
            "progress": self.progress,
            "batch": self.batch,
            "temperature": self.temperature,
            "gathered": self.gathered,
        }
        if scores is not None:
            if self.local is not None:
                raise ValueError("a method's own pair scores are a whole [N, N] matrix: use local_loss false")
            if tuple(scores.shape) != tuple(self.positives.shape):
                raise ValueError(f"pair scores of shape {tuple(scores.shape)}: expected {tuple(self.positives.shape)}")
            return PairContext(scores=scores, positives=self.positives, **common)
        measure = similarity if similarity is not None else (lambda first, second: first @ second.T)
        if self.local is None:
            return PairContext(
                scores=measure(self.embeddings[rows], self.embeddings[columns]), positives=self.positives, **common
            )
        return PairContext(
            scores=measure(self.local[rows], self.embeddings[columns]),
            positives=self.local_positives,
            column_scores=measure(self.local[columns], self.embeddings[rows]),
            column_positives=self.local_positives,
            sum_scale=float(self.world_size),
            **common,
        )
