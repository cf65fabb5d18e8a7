"""Video frames for CLIP-based methods (ProTA, itr_video_methods §3.3): cached frame tokens or raw decoded frames.

* ``FrameTokens`` (fast frozen-backbone mode): cached per-frame CLIP tokens, a folder of ``<video_id>.npy``
  [M_i, D] (one CLIP frame embedding per sampled frame) or [M_i, P, D] (patch tokens), or one ``.npy`` [N, M, ...]
  whose rows follow an id list. ``batch["extras"][name]``: ``values`` [B, M, ...] and ``mask`` [B, M].
* ``VideoFrames`` (end-to-end fine-tuning): decoded frames stored as image files, one folder per video
  (``<root>/<video_id>/<frame>.jpg|png``, in file-name order), read with PIL and preprocessed as CLIP does (bicubic
  resize of the shorter side, centre crop, CLIP mean/std). ``values`` [B, M, 3, S, S] and ``mask`` [B, M].

Both sample at most ``num_frames`` frames uniformly (CLIP4Clip's convention, first and last kept). A video without
frames, or a shard whose shape differs from the store's, is an error naming the file and the id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import BoundExtra, Extra
from leccr_lightning.data.video.regions import uniform_frame_indices

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def pad_frames(arrays: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """``values`` [B, M, ...] (zeros after each item's frames) and ``mask`` [B, M] of per-item frame stacks."""
    length = max(len(a) for a in arrays)
    values = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=np.float32)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, array in enumerate(arrays):
        values[i, : len(array)] = array
        mask[i, : len(array)] = True
    return {"values": torch.from_numpy(values), "mask": torch.from_numpy(mask)}


class _BoundFrameTokens(BoundExtra):
    def __init__(self, read, num_frames: int | None, dtype: torch.dtype):
        self.read, self.num_frames, self.dtype = read, num_frames, dtype

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        arrays = []
        for row in np.asarray(rows):
            tokens = self.read(int(row))
            arrays.append(np.asarray(tokens[uniform_frame_indices(tokens.shape[0], self.num_frames)]))
        out = pad_frames(arrays)
        return {"values": out["values"].to(self.dtype), "mask": out["mask"]}


class FrameTokens(Extra):
    """Cached per-frame CLIP tokens of each video (level ``item``).

    Args:
        path: a folder of ``<video_id>.npy`` or one ``.npy`` array (``{split}`` allowed; relative to the collection).
        ids: the id list of an ``.npy`` array's rows.
        num_frames: M, frames per video after uniform sampling (``None``: all) [recall: 12 for MSR-VTT/LSMDC,
            CLIP4Clip convention, itr_video_methods §3.2].
        dtype: torch dtype of ``values``.
    """

    level = "item"

    def __init__(self, path: str, ids: str | None = None, num_frames: int | None = 12, dtype: str = "float32"):
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"FrameTokens num_frames: expected None or >= 1, got {num_frames}")
        self.path, self.ids, self.num_frames, self.dtype = path, ids, num_frames, getattr(torch, dtype)

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        from leccr_lightning.data.visualsearch import read_id_list

        path = self.resolve(collection_dir, self.path, split)
        if path.is_dir():
            files = [path / f"{video_id}.npy" for video_id in ids]
            token_shape = None
            for video_id, file in zip(ids, files, strict=True):
                if not file.is_file():
                    raise DataFormatError(
                        file, video_id, f"no cached frame tokens for video {video_id} (from {source})"
                    )
                shape = np.load(file, mmap_mode="r").shape
                if len(shape) not in (2, 3) or shape[0] == 0:
                    raise DataFormatError(
                        file, video_id, f"frame tokens of shape {shape}: expected [frames >= 1, D] or [frames, P, D]"
                    )
                token_shape = token_shape or shape[1:]
                if shape[1:] != token_shape:
                    raise DataFormatError(
                        file,
                        video_id,
                        f"frame tokens of shape {shape}: expected [frames, {', '.join(map(str, token_shape))}]",
                    )
            return _BoundFrameTokens(lambda row: np.load(files[row], mmap_mode="r"), self.num_frames, self.dtype)
        if not path.is_file():
            raise FileNotFoundError(f"frame tokens {path} do not exist (from {self.path!r} for split {split!r})")
        if self.ids is None:
            raise ValueError(f"frame tokens {path}: an .npy array needs the id list of its rows (ids)")
        names = read_id_list(self.resolve(collection_dir, self.ids, split))
        array = np.load(path, mmap_mode="r")
        if array.ndim not in (3, 4) or array.shape[0] != len(names) or array.shape[1] == 0:
            raise DataFormatError(path, 0, f"shape {array.shape}: expected [{len(names)}, frames >= 1, ...]")
        row_of = {name: row for row, name in enumerate(names)}
        missing = next((video_id for video_id in ids if video_id not in row_of), None)
        if missing is not None:
            raise DataFormatError(path, missing, f"video {missing} of {source} is not in the id list")
        rows = [row_of[video_id] for video_id in ids]
        return _BoundFrameTokens(lambda row: array[rows[row]], self.num_frames, self.dtype)


def clip_frame_transform(image_size: int):
    """CLIP's eval preprocessing: bicubic resize of the shorter side to ``image_size``, centre crop, CLIP mean/std."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class _BoundVideoFrames(BoundExtra):
    def __init__(self, frames: list[list[Path]], ids: list[str], transform, num_frames: int | None):
        self.frames, self.ids, self.transform, self.num_frames = frames, ids, transform, num_frames

    def _load(self, path: Path, video_id: str) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DataFormatError(path, video_id, f"not a readable frame image ({err})") from err

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        videos = []
        for row in np.asarray(rows):
            files = self.frames[int(row)]
            picked = [files[i] for i in uniform_frame_indices(len(files), self.num_frames)]
            videos.append(torch.stack([self._load(f, self.ids[int(row)]) for f in picked]))
        length = max(len(v) for v in videos)
        values = torch.zeros(len(videos), length, *videos[0].shape[1:])
        mask = torch.zeros(len(videos), length, dtype=torch.bool)
        for i, video in enumerate(videos):
            values[i, : len(video)] = video
            mask[i, : len(video)] = True
        return {"values": values, "mask": mask}


class VideoFrames(Extra):
    """Decoded frames of each video as image files, one folder per video (level ``item``).

    Args:
        path: the root holding ``<video_id>/`` folders (``{split}`` allowed; relative to the collection folder).
        num_frames: M frames per video after uniform sampling [recall: 12, CLIP4Clip convention].
        image_size: S, the square CLIP input (224 for ViT-B/32 and B/16).
    """

    level = "item"

    def __init__(self, path: str, num_frames: int | None = 12, image_size: int = 224):
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"VideoFrames num_frames: expected None or >= 1, got {num_frames}")
        self.path, self.num_frames, self.image_size = path, num_frames, image_size

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        root = self.resolve(collection_dir, self.path, split)
        if not root.is_dir():
            raise FileNotFoundError(f"frame folder root {root} does not exist (from {self.path!r} for split {split!r})")
        frames = []
        for video_id in ids:
            folder = root / video_id
            if not folder.is_dir():
                raise DataFormatError(folder, video_id, f"no frame folder for video {video_id} (from {source})")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not files:
                raise DataFormatError(
                    folder, video_id, f"the video has no frames (no {'/'.join(FRAME_SUFFIXES)} files)"
                )
            frames.append(files)
        return _BoundVideoFrames(frames, list(ids), clip_frame_transform(self.image_size), self.num_frames)


def write_frame_tokens(folder: str | Path, tokens: Mapping[str, np.ndarray]) -> Path:
    """Write ``<id>.npy`` (fp16 [M, D] or [M, P, D]) per video."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for video_id, array in tokens.items():
        np.save(folder / f"{video_id}.npy", np.asarray(array, dtype=np.float16))
    return folder


def write_frame_images(root: str | Path, frames: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Write each video's RGB frames ([H, W, 3] in [0, 1]) as ``<root>/<id>/<k:04d>.png``."""
    from PIL import Image

    root = Path(root)
    for video_id, pictures in frames.items():
        folder = root / video_id
        folder.mkdir(parents=True, exist_ok=True)
        for k, picture in enumerate(pictures):
            Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8)).save(folder / f"{k:04d}.png")
    return root
