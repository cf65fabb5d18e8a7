"""The query-level grounding Dataset and its collate function (spec grounding_methods §5.4).

Span targets are every GT window as normalised (c, w), divided either by the annotated duration (the
``"duration"`` normaliser, which inference multiplies by, §1.1) or, as upstream, by the feature length
n_clips * clip_len (``"features"``, moment_detr/start_end_dataset.py:164). Items hold no random draw: the training
targets that upstream draws in the dataset (window subset, hinge pairs) are drawn per epoch by
``saliency.draw_training_targets``. The clips of a window-only annotation are counted with the configured clip
length (``window_clips_from="clip_len"``, QD-DETR) or with duration / n_clips (``"duration"``, CG-DETR's Charades-STA
and TACoS code, cg_detr/start_end_dataset.py:227).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from leccr_lightning.data.grounding.annotations import GroundingRecord
from leccr_lightning.data.grounding.features import ClipFeatures, QueryFeatures
from leccr_lightning.data.grounding.saliency import saliency_labels
from leccr_lightning.data.grounding.spans import span_xx_to_cxw
from leccr_lightning.data.text import TokenizedTexts

SPAN_NORMALISERS = ("duration", "features")
WINDOW_CLIPS_FROM = ("clip_len", "duration")


class GroundingDataset(Dataset):
    """Query-level items: clip features, query token features (when ``text`` is given), every GT window as
    normalised (c, w), the clips' saliency labels, relevant clips and hard pair. ``tokens`` holds the split's
    queries tokenised once (row = item index); the collate function pads them per batch."""

    def __init__(
        self,
        records: Sequence[GroundingRecord],
        video: ClipFeatures,
        text: QueryFeatures | None,
        clip_len: float = 2.0,
        tokens: TokenizedTexts | None = None,
        span_normaliser: str = "duration",
        window_clips_from: str = "clip_len",
    ) -> None:
        if span_normaliser not in SPAN_NORMALISERS:
            raise ValueError(f"span_normaliser must be one of {SPAN_NORMALISERS}, got {span_normaliser!r}")
        if window_clips_from not in WINDOW_CLIPS_FROM:
            raise ValueError(f"window_clips_from must be one of {WINDOW_CLIPS_FROM}, got {window_clips_from!r}")
        self.records = list(records)
        self.video, self.text, self.tokens = video, text, tokens
        self.clip_len, self.span_normaliser, self.window_clips_from = clip_len, span_normaliser, window_clips_from

    def __len__(self) -> int:
        return len(self.records)

    def ground_truth(self) -> list[dict[str, Any]]:
        """The official GT dicts, in dataset order (positions = ``index`` in batches)."""
        return [r.to_official() for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        visual = torch.from_numpy(self.video.load(rec.vid, rec.qid))
        n_clips = len(visual)
        normaliser = rec.duration if self.span_normaliser == "duration" else n_clips * self.clip_len
        clip_len = self.clip_len if self.window_clips_from == "clip_len" else rec.duration / n_clips
        labels = saliency_labels(rec, n_clips, clip_len)
        item = {
            "index": index,
            "qid": rec.qid,
            "vid": rec.vid,
            "duration": rec.duration,
            "visual": visual,
            "spans": span_xx_to_cxw(torch.from_numpy(rec.windows).float() / normaliser),
            "saliency": torch.from_numpy(labels.labels),
            "relevant": torch.from_numpy(labels.relevant),
            "hard_pairs": torch.tensor([labels.hard_pos, labels.hard_neg]),
        }
        if self.text is not None:
            item["text"] = torch.from_numpy(self.text.load(rec.qid))
        return item


def pad_sequences(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, ...] tensors into [B, L_max, ...] zero-padded, with a bool mask [B, L_max] (True = valid)."""
    longest = max(len(s) for s in seqs)
    out = seqs[0].new_zeros((len(seqs), longest, *seqs[0].shape[1:]))
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def collate_grounding(items: Sequence[dict[str, Any]], tokens: TokenizedTexts | None = None) -> dict[str, Any]:
    """Batch: ``visual`` [B, T, Dv] + ``visual_mask``, ``spans`` (list of [N_i, 2] normalised (c, w)),
    ``saliency`` [B, T] labels, ``relevant`` [B, T], ``hard_pairs`` [B, 2], ``index`` [B], ``duration`` [B],
    ``qid``/``vid`` lists; ``text`` [B, Lq, Dt] + ``text_mask`` when the items carry token features, and
    ``tokens`` = {``input_ids``, ``attention_mask``} [B, L] (rows ``index`` of ``tokens``) when given."""
    visual, visual_mask = pad_sequences([it["visual"] for it in items])
    batch = {
        "visual": visual,
        "visual_mask": visual_mask,
        "spans": [it["spans"] for it in items],
        "saliency": pad_sequences([it["saliency"] for it in items])[0],
        "relevant": pad_sequences([it["relevant"] for it in items])[0],
        "hard_pairs": torch.stack([it["hard_pairs"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float64),
        "qid": [it["qid"] for it in items],
        "vid": [it["vid"] for it in items],
    }
    if "text" in items[0]:
        batch["text"], batch["text_mask"] = pad_sequences([it["text"] for it in items])
    if tokens is not None:
        batch["tokens"] = tokens.batch(batch["index"].numpy())
    return batch
