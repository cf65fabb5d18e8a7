"""Region features of video frames (ViSERN, itr_video_methods §2.2-2.3): per-video shards [frames, regions, D].

Two on-disk formats, both fp16 on disk (~147 KB per frame of 36 x 2048 regions) and read per batch:

* a folder of ``<video_id>.npy`` [F, R, D] (memory-mapped), with an optional ``<video_id>.mask.npy`` [F, R] bool
  marking the regions that exist (without it every region exists; a detector that found fewer than R boxes in a
  frame leaves the rest absent);
* one HDF5 file with a group per video, ``<video_id>/features`` [F, R, D] and an optional ``<video_id>/mask``.

Every shard of a store has the same R and D; every video has at least one frame. ``RegionFeatures`` serves them as a
data extra (``batch["extras"][name]``: ``values`` [B, F, R, D], ``mask`` [B, F, R], ``frame_mask`` [B, F]; frames
are padded to the batch's longest video, optionally capped at ``max_frames`` by uniform sampling);
``RegionFeatureStore`` serves the same shards as the DataModule's visual features (``features: {kind: regions}``),
flattened to ``visual`` [B, F * R, D] with ``visual_mask`` [B, F * R], for a region-level visual encoder of a CCR
method (``visual_encoder: visern`` with ``regions_per_frame: R``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import BoundExtra, Extra

MASK_SUFFIX = ".mask.npy"


def uniform_frame_indices(num_frames: int, limit: int | None) -> np.ndarray:
    """All frame indices, or ``limit`` of them spread uniformly (first and last kept) when there are more."""
    if limit is None or num_frames <= limit:
        return np.arange(num_frames)
    return np.linspace(0, num_frames - 1, limit).round().astype(np.int64)


class RegionShards:
    """The region shards of a folder or an HDF5 file, addressed by video id (opened lazily, once per process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "folder"
        elif self.path.is_file():
            self.kind = "hdf5"
        else:
            raise FileNotFoundError(f"region features {self.path} do not exist (a folder of <id>.npy or an HDF5 file)")
        self._handle = None
        self.regions: int | None = None
        self.dim: int | None = None

    def _file(self):
        if self._handle is None:
            import h5py

            self._handle = h5py.File(self.path, "r")
        return self._handle

    def where(self, video_id: str) -> Path | str:
        """The file (folder format) or the HDF5 group of a video, for error messages."""
        return self.path / f"{video_id}.npy" if self.kind == "folder" else f"{self.path}:{video_id}"

    def open(self, video_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(features [F, R, D], mask [F, R] or None) of a video, memory-mapped / lazily read."""
        if self.kind == "folder":
            features = np.load(self.path / f"{video_id}.npy", mmap_mode="r")
            mask_file = self.path / f"{video_id}{MASK_SUFFIX}"
            return features, (np.load(mask_file, mmap_mode="r") if mask_file.is_file() else None)
        group = self._file()[video_id]
        return group["features"], group.get("mask")

    def probe(self) -> tuple[int, int]:
        """(R, D) of the store, from the first shard when no id was checked yet."""
        if self.regions is None:
            if self.kind == "folder":
                first = next((p for p in sorted(self.path.glob("*.npy")) if not p.name.endswith(MASK_SUFFIX)), None)
                video_id = None if first is None else first.name[: -len(".npy")]
            else:
                video_id = next(iter(self._file()), None)
            if video_id is None:
                raise DataFormatError(self.path, 0, "the region store holds no shard")
            self.check([video_id], self.path)
        return int(self.regions), int(self.dim)

    def has(self, video_id: str) -> bool:
        if self.kind == "folder":
            return (self.path / f"{video_id}.npy").is_file()
        return video_id in self._file() and "features" in self._file()[video_id]

    def check(self, video_ids: Sequence[str], source: str | Path) -> None:
        """Validate every shard header of ``video_ids``: present, [F >= 1, R, D] floating, R and D equal across the
        store, a mask [F, R] of booleans when there is one. The first bad shard is an error naming it and the id."""
        for video_id in video_ids:
            if not self.has(video_id):
                raise DataFormatError(
                    self.where(video_id), video_id, f"no region features for video {video_id} (from {source})"
                )
            features, mask = self.open(video_id)
            shape = tuple(features.shape)
            if len(shape) != 3 or not np.issubdtype(features.dtype, np.floating):
                raise DataFormatError(
                    self.where(video_id),
                    video_id,
                    f"region shard of shape {shape} and dtype {features.dtype}: expected floating [frames, regions, D]",
                )
            if shape[0] == 0:
                raise DataFormatError(self.where(video_id), video_id, "the video has no frames")
            if self.regions is None:
                self.regions, self.dim = shape[1], shape[2]
            if shape[1:] != (self.regions, self.dim):
                raise DataFormatError(
                    self.where(video_id),
                    video_id,
                    f"region shard of shape {shape}: expected [frames, {self.regions}, "
                    f"{self.dim}] like the other shards of {self.path}",
                )
            if mask is not None and (tuple(mask.shape) != shape[:2] or mask.dtype != np.bool_):
                raise DataFormatError(
                    self.where(video_id),
                    video_id,
                    f"region mask of shape {tuple(mask.shape)} and dtype {mask.dtype}: expected bool {list(shape[:2])}",
                )

    def batch(self, video_ids: Sequence[str], max_frames: int | None, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``values`` [B, F, R, D], ``mask`` [B, F, R] (region exists) and ``frame_mask`` [B, F] of ``video_ids``."""
        shards = [self.open(video_id) for video_id in video_ids]
        picks = [uniform_frame_indices(features.shape[0], max_frames) for features, _ in shards]
        frames = max(len(p) for p in picks)
        values = np.zeros((len(shards), frames, self.regions, self.dim), dtype=np.float32)
        mask = np.zeros((len(shards), frames, self.regions), dtype=bool)
        frame_mask = np.zeros((len(shards), frames), dtype=bool)
        for i, ((features, region_mask), pick) in enumerate(zip(shards, picks, strict=True)):
            values[i, : len(pick)] = np.asarray(features[pick])
            mask[i, : len(pick)] = True if region_mask is None else np.asarray(region_mask)[pick]
            frame_mask[i, : len(pick)] = True
        values[~mask] = 0.0
        return {
            "values": torch.from_numpy(values).to(dtype),
            "mask": torch.from_numpy(mask),
            "frame_mask": torch.from_numpy(frame_mask),
        }

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


class _BoundRegions(BoundExtra):
    def __init__(self, shards: RegionShards, ids: Sequence[str], max_frames: int | None, dtype: torch.dtype):
        self.shards, self.ids, self.max_frames, self.dtype = shards, list(ids), max_frames, dtype

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return self.shards.batch([self.ids[int(r)] for r in np.asarray(rows)], self.max_frames, self.dtype)


class RegionFeatures(Extra):
    """Per-video region features as a data extra (level ``item``); see the module docstring for the formats.

    Args:
        path: the shard folder or HDF5 file (``{split}`` allowed; relative to the collection folder).
        max_frames: at most this many frames per video, sampled uniformly (``None``: every frame) [recall: ViSERN's
            frame sampling is not known, itr_video_methods §11].
        dtype: the torch dtype of ``values`` (``float32``; shards are fp16 on disk).
    """

    level = "item"

    def __init__(self, path: str, max_frames: int | None = None, dtype: str = "float32"):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"RegionFeatures max_frames: expected None or >= 1, got {max_frames}")
        self.path, self.max_frames, self.dtype = path, max_frames, getattr(torch, dtype)

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        shards = RegionShards(self.resolve(collection_dir, self.path, split))
        shards.check(ids, source)
        return _BoundRegions(shards, ids, self.max_frames, self.dtype)


class RegionFeatureStore:
    """Region shards behind the visual-store interface (``features: {kind: regions, path: ...}``): a batch is the
    flattened ``visual`` [B, F * R, D] (frame-major: region r of frame f at f * R + r) and ``visual_mask``
    [B, F * R]; ``regions_per_frame`` is R. Frames are capped at ``max_frames`` by uniform sampling."""

    def __init__(self, path: str | Path, max_frames: int | None = None):
        self.shards = RegionShards(path)
        self.path = self.shards.path
        self.max_frames = max_frames
        self.names: list[str] = []
        self._row_of: dict[str, int] = {}

    @property
    def dim(self) -> int:
        """D of the shards (read from the first one when no id was checked yet)."""
        return self.shards.probe()[1]

    @property
    def regions_per_frame(self) -> int:
        """R of the shards."""
        return self.shards.probe()[0]

    def __contains__(self, visual_id: str) -> bool:
        return self.shards.has(visual_id)

    def check_ids(self, visual_ids: Sequence[str], source: str | Path) -> None:
        """Validate the shards of ``visual_ids`` (see ``RegionShards.check``) and give each a row."""
        self.shards.check(visual_ids, source)
        for visual_id in visual_ids:
            if visual_id not in self._row_of:
                self._row_of[visual_id] = len(self.names)
                self.names.append(visual_id)

    def rows_of(self, visual_id: str) -> np.ndarray:
        if visual_id not in self._row_of:
            self.check_ids([visual_id], self.path)
        return np.asarray([self._row_of[visual_id]], dtype=np.int64)

    def single_row_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.shards.batch([self.names[int(r)] for r in rows], self.max_frames, torch.float32)
        batch, frames, regions, dim = out["values"].shape
        return out["values"].reshape(batch, frames * regions, dim), out["mask"].reshape(batch, frames * regions)


def write_region_shards(
    folder: str | Path, shards: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Write ``<id>.npy`` (fp16 [F, R, D]) per video, and ``<id>.mask.npy`` where a mask is given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for video_id, features in shards.items():
        np.save(folder / f"{video_id}.npy", np.asarray(features, dtype=np.float16))
        if masks is not None and video_id in masks:
            np.save(folder / f"{video_id}{MASK_SUFFIX}", np.asarray(masks[video_id], dtype=bool))
    return folder


def write_region_hdf5(
    path: str | Path, shards: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Write one HDF5 file with ``<id>/features`` (fp16 [F, R, D]) and, where given, ``<id>/mask``."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for video_id, features in shards.items():
            group = handle.create_group(video_id)
            group.create_dataset("features", data=np.asarray(features, dtype=np.float16))
            if masks is not None and video_id in masks:
                group.create_dataset("mask", data=np.asarray(masks[video_id], dtype=bool))
    return path
