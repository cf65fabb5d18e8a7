"""The query-level grounding Dataset and its collate function (spec grounding_methods §5.4).

Span targets are the GT windows divided by the annotated duration; inference multiplies by the same duration (one
normaliser for both, §1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from leccr_lightning.data.grounding.annotations import GroundingRecord
from leccr_lightning.data.grounding.features import ClipFeatures, QueryFeatures
from leccr_lightning.data.grounding.saliency import clip_saliency, sample_saliency_pairs
from leccr_lightning.data.grounding.spans import span_xx_to_cxw
from leccr_lightning.data.text import TokenizedTexts


class GroundingDataset(Dataset):
    """Query-level items: clip features, query token features (when ``text`` is given), normalised (c, w) targets,
    saliency labels. ``tokens`` holds the split's queries tokenised once (row = item index); the collate function
    pads them per batch."""

    def __init__(
        self,
        records: Sequence[GroundingRecord],
        video: ClipFeatures,
        text: QueryFeatures | None,
        clip_len: float = 2.0,
        max_windows: int = 5,
        train: bool = False,
        tokens: TokenizedTexts | None = None,
    ) -> None:
        self.records = list(records)
        self.video, self.text, self.tokens = video, text, tokens
        self.clip_len, self.max_windows, self.train = clip_len, max_windows, train

    def __len__(self) -> int:
        return len(self.records)

    def ground_truth(self) -> list[dict[str, Any]]:
        """The official GT dicts, in dataset order (positions = ``index`` in batches)."""
        return [r.to_official() for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        visual = torch.from_numpy(self.video.load(rec.vid, rec.qid))
        windows = torch.from_numpy(rec.windows).float()
        if self.train and len(windows) > self.max_windows:  # §5.1: shuffle and keep max_windows in training
            windows = windows[torch.randperm(len(windows))[: self.max_windows]]
        saliency = clip_saliency(rec, len(visual), self.clip_len)
        pos, neg = sample_saliency_pairs(saliency)
        item = {
            "index": index,
            "qid": rec.qid,
            "vid": rec.vid,
            "duration": rec.duration,
            "visual": visual,
            "spans": span_xx_to_cxw(windows / rec.duration).clamp(0.0, 1.0),
            "saliency": torch.from_numpy(saliency),
            "saliency_pos": torch.tensor(pos),
            "saliency_neg": torch.tensor(neg),
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
    ``saliency`` [B, T], ``saliency_pos``/``saliency_neg`` [B, 2], ``index`` [B], ``duration`` [B],
    ``qid``/``vid`` lists; ``text`` [B, Lq, Dt] + ``text_mask`` when the items carry token features, and
    ``tokens`` = {``input_ids``, ``attention_mask``} [B, L] (rows ``index`` of ``tokens``) when given."""
    visual, visual_mask = pad_sequences([it["visual"] for it in items])
    saliency, _ = pad_sequences([it["saliency"] for it in items])
    batch = {
        "visual": visual,
        "visual_mask": visual_mask,
        "spans": [it["spans"] for it in items],
        "saliency": saliency,
        "saliency_pos": torch.stack([it["saliency_pos"] for it in items]),
        "saliency_neg": torch.stack([it["saliency_neg"] for it in items]),
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
