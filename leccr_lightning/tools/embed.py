"""``leccr embed``: the embeddings of a split's queries and gallery, every named view, from a ``leccr fit`` checkpoint.

The method and its DataModule are rebuilt from the checkpoint alone (``--root`` moves the data); each batch goes
through the method's ``predict_step`` (its ``encode_queries`` / ``encode_gallery``). ``--out`` receives::

    queries/<view>/   caption ids      (BigFile: feature.bin, id.txt, shape.txt; or --format npy: queries/<view>.npy)
    gallery/<view>/   visual ids       (npy: gallery/<view>.npy, with gallery/ids.txt and queries/ids.txt)
    embeddings.json   checkpoint, split, method, the shape of every view, and the dot-product views of its scorer

BigFiles are the ``FeatureData`` layout the data layer reads; a view with more than two dimensions (LECCR slots) is
flattened to [N, prod(rest)] there (its shape is in ``embeddings.json``), while ``.npy`` keeps it.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

import lightning as L
import numpy as np
import torch
from jsonargparse import ArgumentParser

from leccr_lightning.data.features import BigFileStore, write_bigfile
from leccr_lightning.data.visualsearch import read_id_list
from leccr_lightning.metrics.scoring import DotScorer

ROLE_FOLDERS = {"query": "queries", "gallery": "gallery"}
FORMATS = ("bigfile", "npy")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dictionary (tensors on the CPU, ``weights_only``); an error names a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _import_class_module(class_path: str | None, path: Path, what: str) -> None:
    """Import the module of a checkpoint's ``_class_path`` (Lightning loads only classes already imported); only
    classes of this package are imported on the checkpoint's word."""
    if not class_path:
        raise ValueError(f"checkpoint {path} names no {what} class (_class_path): was it written by `leccr fit`?")
    if not class_path.startswith("leccr_lightning."):
        raise ValueError(f"checkpoint {path}: {what} {class_path} is outside leccr_lightning; import it yourself")
    import_module(class_path.rsplit(".", 1)[0])


def load_method(path: str | Path, device: str = "cpu") -> L.LightningModule:
    """The trained method of a ``leccr fit`` checkpoint, in eval mode on ``device``."""
    checkpoint = read_checkpoint(path)
    _import_class_module(checkpoint.get("hyper_parameters", {}).get("_class_path"), Path(path), "method")
    model = L.LightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.to(device).eval()


def load_datamodule(path: str | Path, **overrides) -> L.LightningDataModule:
    """The DataModule a checkpoint was trained with (its saved arguments, ``overrides`` applied; its tokenizer
    restored from the checkpoint)."""
    checkpoint = read_checkpoint(path)
    _import_class_module(checkpoint.get("datamodule_hyper_parameters", {}).get("_class_path"), Path(path), "data")
    return L.LightningDataModule.load_from_checkpoint(path, weights_only=True, **overrides)


def embed_split(model: L.LightningModule, datamodule: L.LightningDataModule, split: str, device: str) -> dict:
    """role (``query``/``gallery``) -> ``(ids, {view: tensor [N, ...]})`` in the split's position order."""
    if split not in ("val", "test"):
        raise ValueError(f"--split must be 'val' or 'test', got {split!r}")
    datamodule.setup("validate" if split == "val" else "test")
    loaders = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    collected: dict[str, list[dict]] = {"query": [], "gallery": []}
    with torch.inference_mode():
        for loader in loaders:
            for batch_idx, batch in enumerate(loader):
                output = model.predict_step(model.transfer_batch_to_device(batch, torch.device(device), 0), batch_idx)
                collected[output["kind"]].append(output)
    result = {}
    for role, outputs in collected.items():
        positions = torch.cat([o["position"] for o in outputs])
        order = torch.argsort(positions).tolist()
        ids = [i for o in outputs for i in o["ids"]]
        views = {name: torch.cat([o["views"][name] for o in outputs])[order] for name in outputs[0]["views"]}
        result[role] = ([ids[i] for i in order], views)
    return result


def write_embeddings(out: Path, embedded: dict, fmt: str) -> dict:
    """Write every view; returns role -> view -> {shape, path} (paths relative to ``out``)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    listing: dict[str, dict] = {}
    for role, (ids, views) in embedded.items():
        folder = out / ROLE_FOLDERS[role]
        folder.mkdir(parents=True, exist_ok=True)
        listing[ROLE_FOLDERS[role]] = {}
        if fmt == "npy":
            (folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        for name, view in views.items():
            array = view.float().numpy()
            if fmt == "bigfile":
                write_bigfile(folder / name, ids, array.reshape(len(ids), -1))
                relative = f"{ROLE_FOLDERS[role]}/{name}"
            else:
                np.save(folder / f"{name}.npy", array)
                relative = f"{ROLE_FOLDERS[role]}/{name}.npy"
            listing[ROLE_FOLDERS[role]][name] = {"shape": list(array.shape), "path": relative}
    return listing


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, float32 [N, D])`` of one view written by ``leccr embed``: a BigFile folder, or a ``.npy`` file with
    ``ids.txt`` beside it."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"embedding file {path} does not exist")
        matrix = np.load(path)
        ids = read_id_list(path.parent / "ids.txt")
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise ValueError(f"{path}: shape {matrix.shape} does not match {len(ids)} ids in {path.parent / 'ids.txt'}")
        return ids, np.ascontiguousarray(matrix, dtype=np.float32)
    store = BigFileStore(path)
    return list(store.names), store.gather_rows(np.arange(store.shape[0]))


def embeddings_manifest(path: str | Path) -> dict:
    """The ``embeddings.json`` of the ``leccr embed`` output holding the view at ``path`` ({} if none)."""
    for folder in Path(path).resolve().parents:
        manifest = folder / "embeddings.json"
        if manifest.is_file():
            return json.loads(manifest.read_text(encoding="utf-8"))
    return {}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr embed", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by leccr fit")
    parser.add_argument("--out", required=True, help="output folder (queries/, gallery/, embeddings.json)")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="evaluation split to embed")
    parser.add_argument("--format", default="bigfile", choices=FORMATS, help="BigFile folders or .npy + ids.txt")
    parser.add_argument("--root", default=None, help="VisualSearch root of the data; null: the checkpoint's")
    parser.add_argument("--batch_size", type=int, default=None, help="evaluation batch size; null: the checkpoint's")
    parser.add_argument("--device", default="cpu", help="torch device for encoding (cpu, cuda...)")
    return parser


def embed_main(argv: list[str]) -> dict:
    """Parse ``argv``, embed the split and write it; returns the ``embeddings.json`` content."""
    cfg = build_parser().parse_args(argv)
    overrides = {k: v for k, v in (("root", cfg.root), ("eval_batch_size", cfg.batch_size)) if v is not None}
    model = load_method(cfg.checkpoint, cfg.device)
    datamodule = load_datamodule(cfg.checkpoint, **overrides)
    embedded = embed_split(model, datamodule, cfg.split, cfg.device)
    out = Path(cfg.out)
    scorer = model.scorer(cfg.split)
    manifest = {
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "split": cfg.split,
        "method": model.hparams.get("_class_path", type(model).__name__),
        "format": cfg.format,
        "views": write_embeddings(out, embedded, cfg.format),
        "counts": {ROLE_FOLDERS[role]: len(ids) for role, (ids, _) in embedded.items()},
        "dot_views": [scorer.query_view, scorer.gallery_view] if isinstance(scorer, DotScorer) else None,
        "scorer": type(scorer).__name__,
    }
    (out / "embeddings.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for role, views in manifest["views"].items():
        for name, spec in views.items():
            print(f"{role}/{name}: {spec['shape']} -> {out / spec['path']}")
    return manifest
