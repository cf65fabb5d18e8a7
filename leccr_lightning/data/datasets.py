"""Training and evaluation datasets over the official layout; every item is an integer, batches are built whole.

Training (``PseudoParallelDataset``): one item per human English caption ``v#enc#k``; the aligned machine
translation ``v#enc2xx#k`` (and back-translation ``v#enc2xx2enc#k``) are found by tag substitution (ccr_methods
§2.3, §7 item 4). Evaluation (``QuerySet`` + ``Gallery``): human target-language queries ``v#xx#k`` (optionally their
MT into English ``v#xx2enc#k``) and an ordered gallery of visual items; the ground truth comes from the ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import BoundExtra, extras_batch
from leccr_lightning.data.features import DescriptionFeatureStore, FeatureStore
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.text import TokenizedTexts
from leccr_lightning.data.visualsearch import CaptionFile


def aligned_rows(anchor: CaptionFile, other: CaptionFile, tag: str) -> np.ndarray:
    """Row in ``other`` of the caption aligned with each ``anchor`` caption (same visual id and index, ``tag``).

    A missing aligned caption is an error naming the anchor caption id and the file it should be in.
    """
    row_of = {cap_id: i for i, cap_id in enumerate(other.ids)}
    rows = np.empty(len(anchor), dtype=np.int64)
    for i, parsed in enumerate(anchor.parsed):
        wanted = parsed.with_tag(tag)
        row = row_of.get(wanted)
        if row is None:
            raise DataFormatError(
                other.path,
                anchor.ids[i],
                f"no caption {wanted} aligned with {anchor.ids[i]} of {anchor.path.name}",
            )
        rows[i] = row
    return rows


class EpochShuffleSampler(DistributedSampler):
    """A permutation drawn from ``seed`` and the epoch alone (Lightning calls ``set_epoch``), so a run resumed from a
    checkpoint sees the same batches as an uninterrupted one, whatever the global RNG state.

    With ``num_replicas`` W > 1, rank r reads positions r, r + W, r + 2W, ... of that one permutation (padded with its
    first items to a multiple of W, as ``DistributedSampler`` pads): batch k of all ranks together, at batch size
    B / W each, holds exactly the items of batch k of a 1-process run at batch size B, so W processes with cross-rank
    negatives (``gather_negatives``) train on the batches one process would. (Lightning keeps a ``DistributedSampler``
    as it is instead of wrapping it in its own shuffling one. Dropout still draws other masks in W processes.)
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.size = size

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: self.total_size - self.size]
        return iter(order[self.rank : self.total_size : self.num_replicas])


class VisualItems:
    """An ordered list of visual items with their feature rows resolved once (errors name the missing id)."""

    def __init__(self, visual_ids: Sequence[str], store: FeatureStore | ImageFolderStore, source: str | Path):
        self.ids = list(visual_ids)
        self.source = Path(source)
        self.position = {visual_id: i for i, visual_id in enumerate(self.ids)}
        self.store = store
        store.check_ids(self.ids, source)
        self.rows = [store.rows_of(visual_id) for visual_id in self.ids]
        single = all(len(r) == 1 for r in self.rows)
        self.single_rows = np.concatenate(self.rows) if single else None

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual`` [B, T, D] (images: pixels [B, 3, H, W]) and ``visual_mask`` [B, T] for items at ``positions``
        (one read per batch)."""
        if self.single_rows is not None:
            return self.store.single_row_batch(self.single_rows[np.asarray(positions)])
        return self.store.batch([self.rows[p] for p in positions])


class ItemDescriptionFeatures:
    """Precomputed description token features of an ordered list of visual items (rows resolved once; a missing id
    is an error naming it)."""

    def __init__(self, items: VisualItems, store: DescriptionFeatureStore, source: str | Path):
        self.store = store
        self.rows = store.rows_for(items.ids, source)

    def batch(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """``description_features`` [B, L, D] and ``description_mask`` [B, L] of the items at ``positions``."""
        features, mask = self.store.batch(self.rows[np.asarray(positions)])
        return {"description_features": features, "description_mask": mask}


def positions_of(captions: CaptionFile, items: VisualItems) -> np.ndarray:
    """The item position of every caption; a caption whose visual item is unknown is an error naming it."""
    out = np.empty(len(captions), dtype=np.int64)
    for i, parsed in enumerate(captions.parsed):
        position = items.position.get(parsed.visual_id)
        if position is None:
            raise DataFormatError(
                captions.path,
                captions.ids[i],
                f"visual item {parsed.visual_id} is not in the split's id list",
            )
        out[i] = position
    return out


class PseudoParallelDataset(Dataset):
    """(visual, English source, MT target[, back-translation][, description]) training items, one per source caption.

    ``texts`` maps a role to its tokenised captions and ``text_rows[role]`` gives, for every source caption, the row
    of that role's caption (the identity for ``source``; aligned rows for ``target``/``back``; the visual item's row
    for ``description``). ``description_features`` (instead of description text) adds precomputed description tokens;
    ``item_extras`` / ``caption_extras`` are bound to the items / the source captions (``data/extras.py``).
    """

    def __init__(
        self,
        source: CaptionFile,
        items: VisualItems,
        texts: Mapping[str, TokenizedTexts],
        text_rows: Mapping[str, np.ndarray],
        description_features: ItemDescriptionFeatures | None = None,
        item_extras: Mapping[str, BoundExtra] | None = None,
        caption_extras: Mapping[str, BoundExtra] | None = None,
    ):
        self.source = source
        self.items = items
        self.texts = dict(texts)
        self.text_rows = dict(text_rows)
        self.description_features = description_features
        self.item_extras = dict(item_extras or {})
        self.caption_extras = dict(caption_extras or {})
        self.visual_index = positions_of(source, items)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int]) -> dict:
        """Build a training batch (ARCHITECTURE "Training batch" contract)."""
        indices = np.asarray(indices, dtype=np.int64)
        visual_index = self.visual_index[indices]
        visual, visual_mask = self.items.batch(visual_index)
        batch = {
            "visual": visual,
            "visual_mask": visual_mask,
            "visual_index": torch.from_numpy(visual_index),
            "text": {role: self.texts[role].batch(self.text_rows[role][indices]) for role in self.texts},
            "caption_ids": [self.source.ids[i] for i in indices],
            "extras": {**extras_batch(self.item_extras, visual_index), **extras_batch(self.caption_extras, indices)},
        }
        if self.description_features is not None:
            batch.update(self.description_features.batch(visual_index))
        return batch


class QuerySet(Dataset):
    """Evaluation queries: human target-language captions (+ their translations), each with its gallery position."""

    def __init__(
        self,
        queries: CaptionFile,
        items: VisualItems,
        texts: Mapping[str, TokenizedTexts],
        text_rows: Mapping[str, np.ndarray],
        caption_extras: Mapping[str, BoundExtra] | None = None,
    ):
        self.queries = queries
        self.ids = list(queries.ids)
        self.texts = dict(texts)
        self.text_rows = dict(text_rows)
        self.caption_extras = dict(caption_extras or {})
        self.targets = positions_of(queries, items)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int]) -> dict:
        indices = np.asarray(indices, dtype=np.int64)
        return {
            "kind": "query",
            "position": torch.from_numpy(indices),
            "target": torch.from_numpy(self.targets[indices]),
            "text": {role: self.texts[role].batch(self.text_rows[role][indices]) for role in self.texts},
            "caption_ids": [self.queries.ids[i] for i in indices],
            "extras": extras_batch(self.caption_extras, indices),
        }


class Gallery(Dataset):
    """Evaluation gallery: the split's visual items in id-list order (+ their descriptions, as text or precomputed
    token features, and their item extras, if configured)."""

    def __init__(
        self,
        items: VisualItems,
        texts: Mapping[str, TokenizedTexts] | None = None,
        description_features: ItemDescriptionFeatures | None = None,
        item_extras: Mapping[str, BoundExtra] | None = None,
    ):
        self.items = items
        self.ids = items.ids
        self.texts = dict(texts or {})
        self.description_features = description_features
        self.item_extras = dict(item_extras or {})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int]) -> dict:
        indices = np.asarray(indices, dtype=np.int64)
        visual, visual_mask = self.items.batch(indices)
        batch = {
            "kind": "gallery",
            "position": torch.from_numpy(indices),
            "visual": visual,
            "visual_mask": visual_mask,
            "text": {role: texts.batch(indices) for role, texts in self.texts.items()},
            "visual_ids": [self.items.ids[i] for i in indices],
            "extras": extras_batch(self.item_extras, indices),
        }
        if self.description_features is not None:
            batch.update(self.description_features.batch(indices))
        return batch
