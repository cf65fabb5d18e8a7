"""The objective plug-in contract: a typed ``PairContext`` in, a scalar loss out.

A retrieval method builds one ``PairContext`` per (rows, columns) pair of embeddings it aligns (``RetrievalMethod``
``alignment_step(...).pair(rows, columns)``): the score matrix ``S = rows @ columns^T``, its positive mask (same
visual item), the embeddings of the step by role, the visual index, the training progress, the batch and, where the
method has one, its learnable temperature. An objective declares in ``reads`` the parts of the context beyond the
scores and positives that it needs; a method that cannot provide one of them refuses the objective at construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

TEMPERATURE = "temperature"
ROW_TEXTS = "row_texts"


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
    entries, ``TEMPERATURE``, ``ROW_TEXTS`` (the rows' tokens and caption ids from the local batch).
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
    every aligned pair's ``PairContext`` is built."""

    embeddings: Mapping[str, Tensor]
    index: Tensor
    positives: Tensor
    progress: float
    batch: Mapping
    temperature: Tensor | None = None
    gathered: bool = False

    def pair(
        self, rows: str, columns: str, similarity: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> PairContext:
        """The context of S = E[rows] @ E[columns]^T (e.g. ``pair("target", "visual")``), or of
        S = similarity(E[rows], E[columns]) for another measure (RIVRL's soft Jaccard of concept vectors)."""
        for role in (rows, columns):
            if role not in self.embeddings:
                raise KeyError(f"no {role!r} embeddings in this step; it has {sorted(self.embeddings)}")
        first, second = self.embeddings[rows], self.embeddings[columns]
        return PairContext(
            scores=first @ second.T if similarity is None else similarity(first, second),
            positives=self.positives,
            rows=rows,
            columns=columns,
            embeddings=self.embeddings,
            index=self.index,
            progress=self.progress,
            batch=self.batch,
            temperature=self.temperature,
            gathered=self.gathered,
        )
