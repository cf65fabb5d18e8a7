"""Precomputed sentence features keyed by caption id (RIVRL's optional BERT feature, itr_video_methods §1.1, §1.4):
an HDF5 file with one dataset per caption id (``bert_extract/<collection>_cap_feat.hdf5``, 1024 floats each;
LiJiaBei-7/rivrl:util/tag_data_provider.py:196-198)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import BoundExtra, Extra


class _BoundSentences(BoundExtra):
    def __init__(self, path: Path, ids: Sequence[str], dim: int):
        self.path, self.ids, self.dim = path, list(ids), dim
        self._handle = None

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        import h5py

        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        values = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, row in enumerate(np.asarray(rows)):
            vector = np.asarray(self._handle[self.ids[row]][...], dtype=np.float32).reshape(-1)
            if vector.shape[0] != self.dim:
                raise DataFormatError(self.path, self.ids[row], f"{vector.shape[0]} values, expected {self.dim}")
            values[i] = vector
        return {"values": torch.from_numpy(values)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


class HDF5SentenceFeatures(Extra):
    """One vector per caption id from an HDF5 file whose datasets are named by caption id: ``values`` [B, dim].

    Every caption id of the split must be in the file (the first missing one is an error naming the file and it).
    ``path`` may contain ``{split}`` and ``{collection}`` (the collection folder name); relative paths start at the
    collection folder (the official file sits beside it: ``../bert_extract/...``).
    """

    level = "caption"

    def __init__(self, path: str, dim: int = 1024):
        if dim < 1:
            raise ValueError(f"dim: expected a positive size, got {dim}")
        self.path, self.dim = path, dim

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        import h5py

        path = self.resolve(collection_dir, self.path.replace("{collection}", collection_dir.name), split)
        if not path.is_file():
            raise FileNotFoundError(f"sentence features {path} do not exist (from {self.path!r})")
        with h5py.File(path, "r") as handle:
            missing = next((cap_id for cap_id in ids if cap_id not in handle), None)
        if missing is not None:
            raise DataFormatError(path, missing, f"no sentence feature for caption {missing} of {source}")
        return _BoundSentences(path, ids, self.dim)
