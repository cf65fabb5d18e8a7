"""Visual feature stores behind one interface: visual id -> frame rows -> a padded [B, T, D] batch.

Spec: ccr_methods §1.4. ``BigFile`` is the official layout (``shape.txt`` = ``N D``, ``id.txt`` = N names,
``feature.bin`` = N x D float32 row-major), memory-mapped rather than read row by row with seeks. A video is the
ordered stack of its frame rows listed in ``video2frames.txt`` (a Python dict literal, read with
``ast.literal_eval``). ``.npy`` (+ id list) and HDF5 (``features`` [N, D] + ``ids``) stores share the interface;
raw images (``data/images.py``) plug in as the ``images`` kind. ``DescriptionFeatureStore`` serves precomputed MLLM
description token features [N, L, D] by visual id.
"""

from __future__ import annotations

import ast
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.video.regions import RegionFeatureStore


class FeatureStore(ABC):
    """Rows of a [N, D] float32 matrix addressed by name, optionally grouped into frame sequences per video.

    Subclasses provide ``_matrix()`` (anything NumPy-indexable by a sorted row array) and ``names``.
    """

    path: Path
    names: list[str]

    def __init__(self, video2frames: str | Path | None = None, max_frames: int = 64, frame_sampling: str = "first"):
        if frame_sampling not in ("first", "uniform"):
            raise ValueError(f"frame_sampling must be 'first' or 'uniform', got {frame_sampling!r}")
        self.max_frames = max_frames
        self.frame_sampling = frame_sampling
        self._row_of = {name: i for i, name in enumerate(self.names)}
        self._frames = self._read_video2frames(Path(video2frames)) if video2frames is not None else None

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.shape[1])

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """(N, D) of the underlying matrix."""

    @abstractmethod
    def _matrix(self):
        """The [N, D] matrix, indexable by a sorted row array."""

    def __contains__(self, visual_id: str) -> bool:
        table = self._frames if self._frames is not None else self._row_of
        return visual_id in table

    def _read_video2frames(self, path: Path) -> dict[str, np.ndarray]:
        """Parse ``{video_id: [frame_id, ...]}`` and resolve every frame to its row (errors name the frame)."""
        if not path.is_file():
            raise FileNotFoundError(f"video2frames file {path} does not exist")
        try:
            table = ast.literal_eval(path.read_text(encoding="utf-8"))
        except (ValueError, SyntaxError) as err:
            raise DataFormatError(path, getattr(err, "lineno", 0) or 0, f"not a Python dict literal ({err})") from err
        if not isinstance(table, dict):
            raise DataFormatError(path, 0, "expected a dict {video_id: [frame_id, ...]}")
        frames: dict[str, np.ndarray] = {}
        for video_id, frame_ids in table.items():
            if not frame_ids:
                raise DataFormatError(path, str(video_id), "the video lists no frames")
            rows = []
            for frame_id in frame_ids:
                row = self._row_of.get(frame_id)
                if row is None:
                    raise DataFormatError(path, str(video_id), f"frame {frame_id} is not in {self.path}")
                rows.append(row)
            frames[str(video_id)] = np.asarray(rows, dtype=np.int64)
        return frames

    def rows_of(self, visual_id: str) -> np.ndarray:
        """Matrix rows of an item: one row for an image, its (capped) frame rows for a video."""
        if self._frames is None:
            row = self._row_of.get(visual_id)
            if row is None:
                raise KeyError(f"visual id {visual_id} has no feature in {self.path}")
            return np.asarray([row], dtype=np.int64)
        rows = self._frames.get(visual_id)
        if rows is None:
            raise KeyError(f"video {visual_id} is not in the video2frames table of {self.path}")
        if len(rows) <= self.max_frames:
            return rows
        if self.frame_sampling == "first":
            return rows[: self.max_frames]
        picks = np.linspace(0, len(rows) - 1, self.max_frames).round().astype(np.int64)
        return rows[picks]

    def check_ids(self, visual_ids: Sequence[str], source: str | Path) -> None:
        """Raise one error naming the first id of ``source`` that has no feature here."""
        for visual_id in visual_ids:
            if visual_id not in self:
                raise KeyError(f"visual id {visual_id} (from {source}) has no feature in {self.path}")

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the matrix in the given order, read with one sorted fancy index (no per-row seeks)."""
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        unique_rows, inverse = np.unique(sorted_rows, return_inverse=True)
        block = np.asarray(self._matrix()[unique_rows], dtype=np.float32)
        out = np.empty((len(rows), block.shape[1]), dtype=np.float32)
        out[order] = block[inverse]
        return out

    def single_row_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual`` [B, 1, D] and an all-true ``visual_mask`` [B, 1] for items of one row each (one read)."""
        visual = torch.from_numpy(self.gather_rows(rows))
        return visual[:, None], torch.ones(len(visual), 1, dtype=torch.bool)

    def batch(self, row_lists: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad a batch of frame-row lists into ``visual`` [B, T, D] (zeros) and ``visual_mask`` [B, T] (bool)."""
        lengths = np.fromiter((len(r) for r in row_lists), dtype=np.int64, count=len(row_lists))
        flat = self.gather_rows(np.concatenate(row_lists))
        t_max = int(lengths.max())
        visual = torch.zeros(len(row_lists), t_max, flat.shape[1], dtype=torch.float32)
        mask = torch.arange(t_max)[None, :] < torch.from_numpy(lengths)[:, None]
        visual[mask] = torch.from_numpy(flat)
        return visual, mask


class BigFileStore(FeatureStore):
    """The official BigFile folder, memory-mapped (``feature.bin``, ``id.txt``, ``shape.txt``)."""

    def __init__(
        self,
        path: str | Path,
        video2frames: str | Path | None = None,
        max_frames: int = 64,
        frame_sampling: str = "first",
    ):
        self.path = Path(path)
        shape_file, id_file, bin_file = (self.path / n for n in ("shape.txt", "id.txt", "feature.bin"))
        for required in (shape_file, id_file, bin_file):
            if not required.is_file():
                raise FileNotFoundError(f"BigFile {self.path} lacks {required.name}")
        try:
            n_rows, dim = (int(v) for v in shape_file.read_text().split()[:2])
        except ValueError as err:
            raise DataFormatError(shape_file, 1, "expected two integers 'N D'") from err
        self.names = id_file.read_text(encoding="iso-8859-1").split()
        if len(self.names) != n_rows:
            raise DataFormatError(id_file, 0, f"{len(self.names)} ids but shape.txt says N = {n_rows}")
        expected = n_rows * dim * 4
        actual = bin_file.stat().st_size
        if actual != expected:
            raise DataFormatError(
                bin_file,
                0,
                f"{actual} bytes, expected {expected} (N={n_rows} x D={dim} float32): truncated or wrong shape",
            )
        self._shape = (n_rows, dim)
        self._bin = bin_file
        self._memmap: np.memmap | None = None
        super().__init__(video2frames, max_frames, frame_sampling)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _matrix(self) -> np.memmap:
        if self._memmap is None:
            self._memmap = np.memmap(self._bin, dtype=np.float32, mode="r", shape=self._shape)
        return self._memmap

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_memmap"] = None
        return state


class NpyStore(FeatureStore):
    """A ``(N, D)`` ``.npy`` array whose row order is an id list (the Multi30K ResNet-152 option)."""

    def __init__(
        self,
        path: str | Path,
        ids: str | Path,
        video2frames: str | Path | None = None,
        max_frames: int = 64,
        frame_sampling: str = "first",
    ):
        from leccr_lightning.data.visualsearch import read_id_list

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature array {self.path} does not exist")
        self.names = read_id_list(ids)
        self._array = np.load(self.path, mmap_mode="r")
        if self._array.ndim != 2 or self._array.shape[0] != len(self.names):
            raise DataFormatError(
                self.path, 0, f"shape {self._array.shape} does not match {len(self.names)} ids in {ids}"
            )
        super().__init__(video2frames, max_frames, frame_sampling)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._array.shape)

    def _matrix(self) -> np.ndarray:
        return self._array


class HDF5Store(FeatureStore):
    """An HDF5 file with a ``features`` [N, D] dataset and an ``ids`` dataset; opened lazily once per process."""

    def __init__(
        self,
        path: str | Path,
        features_key: str = "features",
        ids_key: str = "ids",
        video2frames: str | Path | None = None,
        max_frames: int = 64,
        frame_sampling: str = "first",
    ):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"HDF5 feature file {self.path} does not exist")
        with h5py.File(self.path, "r") as handle:
            for key in (features_key, ids_key):
                if key not in handle:
                    raise DataFormatError(self.path, key, f"missing dataset {key!r}")
            self.names = [v.decode() if isinstance(v, bytes) else str(v) for v in handle[ids_key][()]]
            self._shape = tuple(handle[features_key].shape)
        if len(self._shape) != 2 or self._shape[0] != len(self.names):
            raise DataFormatError(self.path, features_key, f"shape {self._shape} does not match {len(self.names)} ids")
        self._features_key = features_key
        self._handle = None
        super().__init__(video2frames, max_frames, frame_sampling)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _matrix(self):
        if self._handle is None:
            import h5py

            self._handle = h5py.File(self.path, "r")
        return self._handle[self._features_key]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


class DescriptionFeatureStore:
    """Precomputed description token features addressed by visual id (LECCR ``generated_caption_type: feats``, §3.1).

    Formats: ``.npy`` [N, L, D] whose row order is an id list (one id per line), HDF5 (``features`` [N, L, D] +
    ``ids``), or a folder of ``<visual_id>.npy`` [L_i, D] files (the official per-item layout). Padding tokens are
    all-zero vectors: a token is valid iff its vector is non-zero.
    """

    def __init__(
        self,
        path: str | Path,
        ids: str | Path | None = None,
        features_key: str = "features",
        ids_key: str = "ids",
    ):
        self.path = Path(path)
        self._features_key = features_key
        self._handle = None
        if self.path.is_dir():
            self.kind = "folder"
            self.names = sorted(p.stem for p in self.path.glob("*.npy"))
            if not self.names:
                raise DataFormatError(self.path, 0, "no <visual_id>.npy description feature files in the folder")
            shape = (len(self.names), None, np.load(self.path / f"{self.names[0]}.npy", mmap_mode="r").shape[-1])
        elif not self.path.is_file():
            raise FileNotFoundError(f"description features {self.path} do not exist")
        elif self.path.suffix == ".npy":
            from leccr_lightning.data.visualsearch import read_id_list

            if ids is None:
                raise ValueError(f"description features {self.path}: an .npy array needs the id list of its rows")
            self.kind = "npy"
            self.names = read_id_list(ids)
            shape = np.load(self.path, mmap_mode="r").shape
        else:
            import h5py

            self.kind = "hdf5"
            with h5py.File(self.path, "r") as handle:
                for key in (features_key, ids_key):
                    if key not in handle:
                        raise DataFormatError(self.path, key, f"missing dataset {key!r}")
                self.names = [v.decode() if isinstance(v, bytes) else str(v) for v in handle[ids_key][()]]
                shape = handle[features_key].shape
        if self.kind != "folder" and (len(shape) != 3 or shape[0] != len(self.names)):
            raise DataFormatError(
                self.path, 0, f"shape {tuple(shape)}: expected [N, L, D] token features for {len(self.names)} ids"
            )
        self.dim = int(shape[-1])
        self._row_of = {name: row for row, name in enumerate(self.names)}

    def rows_for(self, visual_ids: Sequence[str], source: str | Path) -> np.ndarray:
        """Rows of ``visual_ids``; the first id without features is an error naming it and ``source``."""
        rows = np.empty(len(visual_ids), dtype=np.int64)
        for i, visual_id in enumerate(visual_ids):
            row = self._row_of.get(visual_id)
            if row is None:
                raise DataFormatError(
                    self.path, visual_id, f"no description features for visual id {visual_id} (from {source})"
                )
            rows[i] = row
        return rows

    def _matrix(self):
        """The [N, L, D] array (memory-mapped ``.npy`` or HDF5 dataset), opened once per process."""
        if self._handle is None:
            if self.kind == "npy":
                self._handle = np.load(self.path, mmap_mode="r")
            else:
                import h5py

                self._handle = h5py.File(self.path, "r")
        return self._handle if self.kind == "npy" else self._handle[self._features_key]

    def _tokens(self, rows: np.ndarray) -> np.ndarray:
        """[B, L, D] float32 token features of ``rows`` (folder items zero-padded to the longest)."""
        if self.kind == "folder":
            arrays = []
            for row in rows:
                path = self.path / f"{self.names[row]}.npy"
                array = np.load(path)
                if array.ndim != 2 or array.shape[1] != self.dim:
                    raise DataFormatError(path, self.names[row], f"shape {array.shape}: expected [L, {self.dim}]")
                arrays.append(array)
            out = np.zeros((len(rows), max(len(a) for a in arrays), self.dim), dtype=np.float32)
            for i, array in enumerate(arrays):
                out[i, : len(array)] = array
            return out
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(self._matrix()[unique_rows], dtype=np.float32)[inverse]

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``description_features`` [B, L, D] and ``description_mask`` [B, L] (True = non-zero token), with L cut to
        the longest valid extent of the batch; an item without a valid token is an error naming it."""
        tokens = self._tokens(np.asarray(rows, dtype=np.int64))
        mask = np.any(tokens != 0, axis=-1)
        empty = np.flatnonzero(~mask.any(axis=1))
        if len(empty):
            raise DataFormatError(self.path, self.names[rows[empty[0]]], "the description features are all zero")
        extent = int((mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)).max())
        return torch.from_numpy(np.ascontiguousarray(tokens[:, :extent])), torch.from_numpy(mask[:, :extent])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


def write_bigfile(path: str | Path, names: Sequence[str], matrix: np.ndarray) -> None:
    """Write a BigFile folder (``feature.bin`` float32 row-major, ``id.txt``, ``shape.txt``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(names)} names")
    matrix.tofile(path / "feature.bin")
    (path / "id.txt").write_text(" ".join(names), encoding="iso-8859-1")
    (path / "shape.txt").write_text(f"{matrix.shape[0]} {matrix.shape[1]}")


def open_feature_store(
    kind: str,
    path: str | Path,
    ids: str | Path | None = None,
    video2frames: str | Path | None = None,
    max_frames: int = 64,
    frame_sampling: str = "first",
    image_model: str = "resnet18",
    image_size: int | None = None,
    image_train_scale: tuple[float, float] = (0.5, 1.0),
    augment: bool = False,
) -> FeatureStore | ImageFolderStore | RegionFeatureStore:
    """Build a store from its kind: ``bigfile`` | ``npy`` (needs ``ids``) | ``hdf5`` | ``images`` (raw images; ``ids``
    is then the optional ``<id> <file>`` map, and the ``image_*`` options and ``augment`` choose the preprocessing) |
    ``regions`` (per-video region shards, flattened to [F * R, D] per item, ``data/video/regions.py``)."""
    if kind == "bigfile":
        return BigFileStore(path, video2frames, max_frames, frame_sampling)
    if kind == "npy":
        if ids is None:
            raise ValueError("an npy feature store needs the id list that gives its row order")
        return NpyStore(path, ids, video2frames, max_frames, frame_sampling)
    if kind == "hdf5":
        return HDF5Store(path, video2frames=video2frames, max_frames=max_frames, frame_sampling=frame_sampling)
    if kind == "images":
        return ImageFolderStore(
            path, ids, image_model, image_size, augment=augment, train_scale=tuple(image_train_scale)
        )
    if kind == "regions":
        return RegionFeatureStore(path, max_frames)
    raise ValueError(f"unknown feature store kind {kind!r}; expected bigfile, npy, hdf5, images or regions")
