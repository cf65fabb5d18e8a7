"""``leccr extract``: cache global image features from a timm backbone as a BigFile (``feature.bin``/``id.txt``/
``shape.txt``), the layout every CCR data preset reads (ccr_methods §1.4).

Images are ``<images>/<visual_id>.<ext>`` (or listed by an MSCOCO ``image_ids.txt`` map via ``--id_map``), read and
preprocessed with the backbone's own timm evaluation transform; the backbone's pooled output (``num_classes=0``) is
the feature. Weights come only from a local file (``--checkpoint``); without one the backbone is randomly
initialised, which is useful for tests only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

from leccr_lightning.data.features import write_bigfile
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.visualsearch import read_id_list
from leccr_lightning.modules.visual_encoders import TimmImageEncoder


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr extract", description=__doc__)
    parser.add_argument("--images", required=True, help="folder of <visual_id>.<ext> images")
    parser.add_argument("--out", required=True, help="output BigFile folder, e.g. <collection>/FeatureData/resnet50")
    parser.add_argument("--ids", type=list[str], default=[], help="id-list files (default: every image found)")
    parser.add_argument("--id_map", default=None, help="MSCOCO-style '<id> <file>' list")
    parser.add_argument("--model", default="resnet50", help="timm model name")
    parser.add_argument("--checkpoint", default=None, help="local .safetensors/.pth weights of the model")
    parser.add_argument("--image_size", type=int, default=None, help="input size (default: the model's own)")
    parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device of the backbone (cpu, cuda...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised backbone")
    return parser


def extract_features(
    images: ImageFolderStore, visual_ids: list[str], encoder: TimmImageEncoder, batch_size: int, device: str
) -> np.ndarray:
    """[N, C] pooled features of ``visual_ids`` in order (eval mode, no gradients)."""
    encoder = encoder.to(device).eval()
    blocks = []
    with torch.no_grad():
        for start in range(0, len(visual_ids), batch_size):
            pixels = torch.stack([images.load(v) for v in visual_ids[start : start + batch_size]]).to(device)
            blocks.append(encoder(pixels)[1].float().cpu().numpy())
    return np.concatenate(blocks)


def extract_main(argv: list[str]) -> None:
    """Parse ``argv``, extract every listed image and write the BigFile."""
    cfg = build_parser().parse_args(argv)
    images = ImageFolderStore(cfg.images, id_map=cfg.id_map, model_name=cfg.model, image_size=cfg.image_size)
    listed: list[str] = []
    for id_file in cfg.ids:
        ids = read_id_list(id_file)
        images.check_ids(ids, id_file)
        listed.extend(ids)
    visual_ids = list(dict.fromkeys(listed)) or list(images.names)
    if not visual_ids:
        raise ValueError(f"--images {cfg.images}: no image files found")
    kwargs = {"img_size": cfg.image_size} if cfg.image_size and "vit" in cfg.model else None
    torch.manual_seed(cfg.seed)
    encoder = TimmImageEncoder(cfg.model, cfg.checkpoint, trainable=False, model_kwargs=kwargs)
    features = extract_features(images, visual_ids, encoder, cfg.batch_size, cfg.device)
    write_bigfile(Path(cfg.out), visual_ids, features)
    print(f"wrote {features.shape[0]} x {features.shape[1]} features of {cfg.model} to {cfg.out}")
