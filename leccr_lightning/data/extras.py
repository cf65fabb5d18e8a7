"""Per-item and per-caption extras: data a method reads besides the visual features and the caption tokens.

A method lists the extras it reads by name (``required_extras``, like its text roles); the DataModule's ``extras``
maps each name to an ``Extra`` (``class_path``/``init_args`` in YAML). An extra is bound once per split to the split's
ordered visual items (``level = "item"``: concept tags, region features, frame tokens, raw frames) or to its
captions (``level = "caption"``: sentence features keyed by caption id), resolving every id up front (a missing id
is an error naming the file and the id). Batches then carry ``batch["extras"][name]``, a dict of tensors.

A path may contain ``{split}`` (``train``/``val``/``test``) for stores kept per split.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError

LEVELS = ("item", "caption")


class BoundExtra(ABC):
    """An extra resolved for one split: rows of the split's items or captions -> batch tensors."""

    @abstractmethod
    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The tensors of the items (or captions) at ``rows`` of the split's order."""


class Extra(ABC):
    """Configuration of one extra; ``bind`` opens it for a split. ``level``: ``item`` or ``caption``."""

    level: str = "item"

    @abstractmethod
    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        """Open the store for ``split`` and resolve ``ids`` (visual or caption ids, in the split's order; ``source``
        is the file they come from, for error messages)."""

    @staticmethod
    def resolve(collection_dir: Path, path: str, split: str) -> Path:
        """``path`` with ``{split}`` filled in, relative to the collection folder unless absolute."""
        resolved = Path(path.format(split=split))
        return resolved if resolved.is_absolute() else collection_dir / resolved


def bind_extras(
    extras: Mapping[str, Extra], level: str, collection_dir: Path, split: str, ids: Sequence[str], source: Path
) -> dict[str, BoundExtra]:
    """Every extra of ``level`` bound to ``split``'s ``ids``."""
    if level not in LEVELS:
        raise ValueError(f"extra level {level!r}: expected one of {LEVELS}")
    for name, extra in extras.items():
        if extra.level not in LEVELS:
            raise ValueError(f"extra {name!r} has level {extra.level!r}; expected one of {LEVELS}")
    return {
        name: extra.bind(collection_dir, split, ids, source) for name, extra in extras.items() if extra.level == level
    }


def extras_batch(bound: Mapping[str, BoundExtra], rows: np.ndarray) -> dict[str, dict[str, torch.Tensor]]:
    """``{name: tensors}`` of the bound extras at ``rows``."""
    return {name: extra.batch(rows) for name, extra in bound.items()}


class _BoundItemArrays(BoundExtra):
    def __init__(self, read, rows: np.ndarray, dtype: torch.dtype):
        self.read, self.rows, self.dtype = read, rows, dtype

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        arrays = [np.asarray(self.read(int(r))) for r in self.rows[np.asarray(rows)]]
        length = max(a.shape[0] for a in arrays)
        values = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=np.float32)
        mask = np.zeros((len(arrays), length), dtype=bool)
        for i, array in enumerate(arrays):
            values[i, : len(array)] = array
            mask[i, : len(array)] = True
        return {"values": torch.from_numpy(values).to(self.dtype), "mask": torch.from_numpy(mask)}


class ItemArrays(Extra):
    """Per-item arrays [L_i, ...] (e.g. region features [frames x regions, D], frame tokens [M, D]), padded along the
    first axis to the batch's longest item: ``values`` [B, L, ...] and ``mask`` [B, L].

    Formats: a folder of ``<id>.npy`` files (memory-mapped, read per batch), or an ``.npy`` [N, L, ...] whose rows
    follow the id list ``ids`` (one id per line; rows of equal length, all valid). ``level`` is ``item`` (visual ids)
    or ``caption`` (caption ids).
    """

    def __init__(self, path: str, ids: str | None = None, level: str = "item", dtype: str = "float32"):
        if level not in LEVELS:
            raise ValueError(f"ItemArrays level {level!r}: expected one of {LEVELS}")
        self.path, self.ids, self.dtype = path, ids, getattr(torch, dtype)
        self.level = level

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        from leccr_lightning.data.visualsearch import read_id_list

        path = self.resolve(collection_dir, self.path, split)
        if path.is_dir():
            missing = next((i for i in ids if not (path / f"{i}.npy").is_file()), None)
            if missing is not None:
                raise DataFormatError(path, missing, f"no {missing}.npy for an id of {source}")
            files = [path / f"{i}.npy" for i in ids]
            return _BoundItemArrays(lambda row: np.load(files[row], mmap_mode="r"), np.arange(len(ids)), self.dtype)
        if not path.is_file():
            raise FileNotFoundError(f"extra store {path} does not exist (from {self.path!r} for split {split!r})")
        if self.ids is None:
            raise ValueError(f"extra store {path}: an .npy array needs the id list of its rows (ids)")
        names = read_id_list(self.resolve(collection_dir, self.ids, split))
        array = np.load(path, mmap_mode="r")
        if array.ndim < 2 or array.shape[0] != len(names):
            raise DataFormatError(path, 0, f"shape {array.shape}: expected [{len(names)}, L, ...] for the id list")
        row_of = {name: row for row, name in enumerate(names)}
        rows = np.empty(len(ids), dtype=np.int64)
        for i, name in enumerate(ids):
            if name not in row_of:
                raise DataFormatError(path, name, f"id {name} of {source} is not in the id list")
            rows[i] = row_of[name]
        return _BoundItemArrays(lambda row: array[row], rows, self.dtype)
