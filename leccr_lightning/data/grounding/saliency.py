"""Per-clip saliency labels and the clip pairs of the saliency hinge loss (spec grounding_methods §2.3)."""

from __future__ import annotations

import numpy as np
import torch

from leccr_lightning.data.grounding.annotations import GroundingRecord


def clip_saliency(record: GroundingRecord, n_clips: int, clip_len: float) -> np.ndarray:
    """Per-clip saliency [n_clips]: the 3 annotator scores summed (0-12) for QVHighlights (§2.3); without
    annotations, 1 for clips overlapping a GT window (clip k covers [k * clip_len, (k + 1) * clip_len))."""
    out = np.zeros(n_clips, dtype=np.float32)
    if record.saliency_scores is not None and record.relevant_clip_ids is not None:
        ids = np.asarray(record.relevant_clip_ids, dtype=int)
        keep = ids < n_clips
        out[ids[keep]] = record.saliency_scores.sum(axis=1)[keep]
        return out
    for st, ed in record.windows:
        first = int(st // clip_len)
        last = min(int(np.ceil(ed / clip_len)), n_clips)
        out[first:last] = 1.0
    return out


def sample_saliency_pairs(saliency: np.ndarray, generator: torch.Generator | None = None) -> tuple[list, list]:
    """Two positive and two negative clip indices for the hinge loss (§2.3).

    Positives: the highest-scored relevant clip and a random relevant clip; negatives: the lowest-scored relevant
    clip (inside the moment) and a random clip outside. Without an outside pool the lowest relevant clip is used
    twice; without relevant clips random clips are drawn.
    """
    relevant = np.flatnonzero(saliency > 0)
    outside = np.flatnonzero(saliency <= 0)

    def pick(pool: np.ndarray) -> int:
        return int(pool[torch.randint(len(pool), (1,), generator=generator).item()])

    if len(relevant) == 0:
        everything = np.arange(len(saliency))
        return [pick(everything), pick(everything)], [pick(everything), pick(everything)]
    hard_pos = int(relevant[np.argmax(saliency[relevant])])
    hard_neg = int(relevant[np.argmin(saliency[relevant])])
    easy_neg = pick(outside) if len(outside) else hard_neg
    return [hard_pos, pick(relevant)], [hard_neg, easy_neg]
