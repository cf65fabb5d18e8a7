"""Raw images behind the visual-store interface, for end-to-end fine-tuning of a timm backbone (ccr_methods §1.4).

Two layouts: a folder of ``<visual_id>.<ext>`` files (Multi30K ``flickr30k-images/<id>.jpg``), or an id map
``<id> <file>`` per line (MSCOCO ``image_ids.txt``) whose files live in the folder (``all_pics/<file>``). A batch is
``visual`` [B, 3, H, W] (the chosen backbone's timm preprocessing: ``resolve_data_config`` + ``create_transform``,
random-resized-crop augmentation for training, resize + centre crop otherwise) with ``visual_mask`` [B, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image_map(path: Path) -> dict[str, str]:
    """``{visual_id: file name}`` from lines ``<id> <file>`` (MSCOCO ``image_ids.txt``); errors name the line."""
    if not path.is_file():
        raise FileNotFoundError(f"image id map {path} does not exist")
    table: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataFormatError(path, number, f"expected '<id> <image file>', got {line.strip()!r}")
        table[fields[0]] = fields[1]
    return table


def timm_transforms(
    model_name: str,
    image_size: int | None,
    augment: bool,
    train_scale: tuple[float, float],
    hflip: float,
    color_jitter: float | None,
):
    """The timm preprocessing of ``model_name`` (its pretrained config; ``image_size`` overrides the input size):
    ``create_transform(is_training=augment)``."""
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(model_name)
    if pretrained is None:
        raise ValueError(f"timm model {model_name!r} is unknown (no pretrained config to take preprocessing from)")
    args = {"input_size": (3, image_size, image_size)} if image_size else {}
    config = resolve_data_config(args=args, pretrained_cfg=pretrained.to_dict())
    if not augment:
        return create_transform(**config, is_training=False)
    return create_transform(**config, is_training=True, scale=train_scale, hflip=hflip, color_jitter=color_jitter)


class ImageFolderStore:
    """Image files addressed by visual id; ``single_row_batch`` decodes and preprocesses a batch.

    Args:
        path: the image folder.
        id_map: optional ``<id> <file>`` list (MSCOCO ``image_ids.txt``); without it a file's stem is its id.
        model_name: timm backbone whose preprocessing (size, interpolation, crop, mean/std) is used.
        image_size: square input size overriding the backbone's (``None``: its pretrained size).
        augment: training transform (random resized crop + horizontal flip) instead of the eval transform.
        train_scale: crop area range of the training crop (LECCR §3.4: 0.5-1).
        hflip: horizontal flip probability (LECCR §3.4: 0.5).
        color_jitter: timm colour-jitter strength; ``None`` (LECCR §3.4 uses none; timm's own default is 0.4).
    """

    dim = 3

    def __init__(
        self,
        path: str | Path,
        id_map: str | Path | None = None,
        model_name: str = "resnet18",
        image_size: int | None = None,
        augment: bool = False,
        train_scale: tuple[float, float] = (0.5, 1.0),
        hflip: float = 0.5,
        color_jitter: float | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"image folder {self.path} does not exist")
        self.id_map = Path(id_map) if id_map is not None else None
        present = {entry.name for entry in self.path.iterdir()}
        if self.id_map is None:
            files = sorted(name for name in present if Path(name).suffix.lower() in IMAGE_SUFFIXES)
            self._files: dict[str, str] = {}
            for name in files:
                self._files.setdefault(Path(name).stem, name)
            self._missing: set[str] = set()
        else:
            self._files = read_image_map(self.id_map)
            self._missing = {visual_id for visual_id, name in self._files.items() if name not in present}
        self.names = sorted(self._files)
        self._row_of = {name: row for row, name in enumerate(self.names)}
        self.transform = timm_transforms(model_name, image_size, augment, train_scale, hflip, color_jitter)

    def __contains__(self, visual_id: str) -> bool:
        return visual_id in self._files and visual_id not in self._missing

    def file_of(self, visual_id: str) -> Path:
        """The image file of an item (whether or not it exists)."""
        return self.path / self._files.get(visual_id, f"{visual_id}.jpg")

    def check_ids(self, visual_ids: Sequence[str], source: str | Path) -> None:
        """Raise one error naming the first id of ``source`` without an image file, and where it was expected."""
        for visual_id in visual_ids:
            if visual_id in self:
                continue
            if self.id_map is not None and visual_id not in self._files:
                raise DataFormatError(self.id_map, visual_id, f"visual id {visual_id} (from {source}) is not listed")
            expected = self.file_of(visual_id) if self.id_map is not None else self.path / f"{visual_id}.jpg|png"
            raise DataFormatError(expected, visual_id, f"no image file for visual id {visual_id} (from {source})")

    def rows_of(self, visual_id: str) -> np.ndarray:
        """The single row of an image (its index in ``names``)."""
        if visual_id not in self:
            self.check_ids([visual_id], self.path)
        return np.asarray([self._row_of[visual_id]], dtype=np.int64)

    def load(self, visual_id: str) -> torch.Tensor:
        """One preprocessed image [3, H, W]."""
        from PIL import Image, UnidentifiedImageError

        path = self.file_of(visual_id)
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DataFormatError(path, visual_id, f"not a readable image ({err})") from err

    def single_row_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual`` [B, 3, H, W] and an all-true ``visual_mask`` [B, 1] for the images at ``rows``."""
        pixels = torch.stack([self.load(self.names[int(row)]) for row in rows])
        return pixels, torch.ones(len(rows), 1, dtype=torch.bool)
