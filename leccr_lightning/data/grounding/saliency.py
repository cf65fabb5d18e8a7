"""Saliency labels of a query's clips and the clip pairs of the saliency hinge loss (spec grounding_methods §2.3).

Two kinds of labels, as upstream:
- QVHighlights (jayleicn/moment_detr:moment_detr/start_end_dataset.py:119-152, QD-DETR's ``get_saliency_labels_all``
  qd_detr/start_end_dataset.py:180-224): the relevant clips are ``relevant_clip_ids``; a clip's label is its summed
  annotator scores (0-12). Hard pair = (highest-scored, lowest-scored) relevant clip, ties resolved as a stable
  ascending argsort does (the last of the highest, the first of the lowest), which is what upstream's
  ``np.argsort`` under its numpy 1.17.4 does for up to 16 relevant clips; easy pair = (a random relevant clip, a
  random clip outside ``relevant_clip_ids``), or the hard pair again when no clip lies outside.
- Window-only annotations (Charades-STA, TACoS; qd_detr/start_end_dataset.py:124-142, CG-DETR's
  cg_detr/start_end_dataset.py:226-251): the clips [int(s / clip_len), min(int(e / clip_len), n_clips) - 1] of each
  window are relevant with label 1, clip_len being the configured one (QD-DETR) or duration / n_clips (CG-DETR, the
  caller's choice); the pairs are 2 distinct random clips inside and 2 distinct random clips outside, the positives
  standing in for the negatives when fewer than 2 clips lie outside (cg_detr/start_end_dataset.py:242-245).

The random draws come from a generator seeded by (seed, epoch, dataset index) (``draw_training_targets``), so they
do not depend on workers, batch composition or where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from leccr_lightning.data.grounding.annotations import GroundingRecord

NO_HARD_PAIR = -1


@dataclass
class SaliencyLabels:
    """A query's per-clip labels [T] (rank labels of QD-DETR), relevant clips [T] and hard pair (-1: none)."""

    labels: np.ndarray
    relevant: np.ndarray
    hard_pos: int = NO_HARD_PAIR
    hard_neg: int = NO_HARD_PAIR


def window_clips(start: float, end: float, n_clips: int, clip_len: float) -> tuple[int, int]:
    """First and last (inclusive) clip of a window as upstream counts them (qd_detr/start_end_dataset.py:125-128)."""
    last = max(0, min(int(end / clip_len), n_clips) - 1)
    return min(int(start / clip_len), last), last


def saliency_labels(record: GroundingRecord, n_clips: int, clip_len: float) -> SaliencyLabels:
    """The labels of ``record``'s ``n_clips`` clips: annotated scores when present, else its windows."""
    labels = np.zeros(n_clips, dtype=np.float32)
    relevant = np.zeros(n_clips, dtype=bool)
    if record.saliency_scores is not None and record.relevant_clip_ids is not None and record.relevant_clip_ids:
        ids = np.asarray(record.relevant_clip_ids, dtype=int)
        scores = record.saliency_scores.sum(axis=1)
        keep = ids < n_clips  # a clip id past the features (a video a row short) has no clip to label
        labels[ids[keep]], relevant[ids[keep]] = scores[keep], True
        order = np.argsort(scores, kind="stable")  # ascending; upstream np.argsort (start_end_dataset.py:132)
        last = n_clips - 1
        return SaliencyLabels(labels, relevant, min(int(ids[order[-1]]), last), min(int(ids[order[0]]), last))
    for start, end in record.windows:
        first, last = window_clips(start, end, n_clips, clip_len)
        labels[first : last + 1], relevant[first : last + 1] = 1.0, True
    return SaliencyLabels(labels, relevant)


def draw_saliency_pairs(
    relevant: np.ndarray, hard_pos: int, hard_neg: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Two positive and two negative clips for the hinge loss (module docstring).

    Degenerate cases: a QVHighlights query without outside clips repeats its hard pair (start_end_dataset.py:146-148);
    a window-only query with fewer than 2 outside clips uses its positives as negatives (a constant hinge, as
    CG-DETR); a query without relevant clips, where upstream fails, gets [0, 0] twice (a constant hinge).
    """
    inside = np.flatnonzero(relevant)
    outside = np.flatnonzero(~relevant)
    if hard_pos != NO_HARD_PAIR:
        if len(outside) == 0:
            return [hard_pos, hard_pos], [hard_neg, hard_neg]
        return [hard_pos, int(rng.choice(inside))], [hard_neg, int(rng.choice(outside))]
    if len(inside) == 0:
        return [0, 0], [0, 0]
    pos = [int(c) for c in rng.choice(inside, 2, replace=False)] if len(inside) > 1 else [int(inside[0])] * 2
    if len(outside) < 2:
        return pos, list(pos)
    return pos, [int(c) for c in rng.choice(outside, 2, replace=False)]


def draw_training_targets(batch: Mapping[str, Any], seed: int, epoch: int, max_windows: int) -> dict[str, Any]:
    """The training batch with its random targets, drawn per query from ``np.random.default_rng([seed, epoch,
    index])``: ``spans`` cut to ``max_windows`` randomly chosen GT windows (§5.1, start_end_dataset.py:160-162) and
    the hinge pairs ``saliency_pos``/``saliency_neg`` [B, 2]."""
    spans, positives, negatives = [], [], []
    lengths = batch["visual_mask"].sum(1).tolist()
    for b, index in enumerate(batch["index"].tolist()):
        rng = np.random.default_rng([seed, epoch, index])
        windows = batch["spans"][b]
        if len(windows) > max_windows:
            windows = windows[torch.from_numpy(rng.permutation(len(windows))[:max_windows])]
        spans.append(windows)
        hard_pos, hard_neg = batch["hard_pairs"][b].tolist()
        pos, neg = draw_saliency_pairs(batch["relevant"][b, : lengths[b]].numpy(), hard_pos, hard_neg, rng)
        positives.append(pos)
        negatives.append(neg)
    return {
        **batch,
        "spans": spans,
        "saliency_pos": torch.tensor(positives, dtype=torch.long),
        "saliency_neg": torch.tensor(negatives, dtype=torch.long),
    }
