"""Precomputed MLLM description token features: the three on-disk formats, the DataModule option that serves them
instead of description text, LECCR reading them without its text encoder, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.datamodule import CCRDataModule, DescriptionFeatureSpec
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import DescriptionFeatureStore
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.methods.leccr import LECCR
from tests.helpers import (
    CONFIGS,
    assert_consistent_report,
    tiny_datamodule_kwargs,
    written_test_metrics,
)


def padded(tokens: dict[str, np.ndarray], length: int) -> np.ndarray:
    """Stack [L_i, D] token arrays into a zero-padded [N, length, D] array."""
    dim = next(iter(tokens.values())).shape[1]
    out = np.zeros((len(tokens), length, dim), dtype=np.float32)
    for i, array in enumerate(tokens.values()):
        out[i, : len(array)] = array
    return out


def write_all_formats(folder: Path, tokens: dict[str, np.ndarray], length: int) -> dict[str, DescriptionFeatureStore]:
    """The same token features as .npy + id list, HDF5 and a folder of <id>.npy files."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "desc.npy", padded(tokens, length))
    (folder / "desc_ids.txt").write_text("".join(f"{i}\n" for i in tokens))
    with h5py.File(folder / "desc.h5", "w") as handle:
        handle["features"] = padded(tokens, length)
        handle["ids"] = np.array(list(tokens), dtype="S")
    (folder / "per_item").mkdir()
    for visual_id, array in tokens.items():
        np.save(folder / "per_item" / f"{visual_id}.npy", array)
    return {
        "npy": DescriptionFeatureStore(folder / "desc.npy", folder / "desc_ids.txt"),
        "hdf5": DescriptionFeatureStore(folder / "desc.h5"),
        "folder": DescriptionFeatureStore(folder / "per_item"),
    }


def hand_tokens() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal((n, 4)).astype(np.float32) + 5 for name, n in (("a", 2), ("b", 4), ("c", 1))}


def test_all_formats_serve_the_same_tokens_with_masks_cut_to_the_longest(tmp_path):
    tokens = hand_tokens()
    stores = write_all_formats(tmp_path, tokens, length=5)
    for kind, store in stores.items():
        assert store.dim == 4, kind
        rows = store.rows_for(["c", "a", "a"], "val_id.txt")
        features, mask = store.batch(rows)
        assert features.shape == (3, 2, 4) and mask.tolist() == [[True, False], [True, True], [True, True]], kind
        assert torch.equal(features[0, :1], torch.from_numpy(tokens["c"])) and features[0, 1].abs().sum() == 0
        assert torch.equal(features[1], torch.from_numpy(tokens["a"])) and torch.equal(features[1], features[2])
        features, mask = store.batch(store.rows_for(["b"], "val_id.txt"))
        assert features.shape == (1, 4, 4) and mask.all() and torch.equal(features[0], torch.from_numpy(tokens["b"]))


def test_missing_ids_bad_shapes_and_empty_descriptions_are_errors_naming_them(tmp_path):
    tokens = {**hand_tokens(), "empty": np.zeros((2, 4), dtype=np.float32)}
    stores = write_all_formats(tmp_path, tokens, length=4)
    for store in stores.values():
        with pytest.raises(DataFormatError, match=r"id zz: .*val_id\.txt"):
            store.rows_for(["a", "zz"], "val_id.txt")
        with pytest.raises(DataFormatError, match="id empty: the description features are all zero"):
            store.batch(store.rows_for(["a", "empty"], "val_id.txt"))
    with pytest.raises(ValueError, match="id list"):
        DescriptionFeatureStore(tmp_path / "desc.npy")
    (tmp_path / "desc_ids.txt").write_text("a\nb\n")
    with pytest.raises(DataFormatError, match=r"expected \[N, L, D\] token features for 2 ids"):
        DescriptionFeatureStore(tmp_path / "desc.npy", tmp_path / "desc_ids.txt")


def concept_tokens(folder: Path) -> tuple[dict[str, np.ndarray], int]:
    """One token per concept of each item (a one-hot row of the concept's noun), from the collection's manifest."""
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    nouns = sorted({noun for split in manifest["items"].values() for item in split.values() for noun in item})
    tokens = {}
    for split in manifest["items"].values():
        for visual_id, item in split.items():
            tokens[visual_id] = np.eye(len(nouns), dtype=np.float32)[[nouns.index(n) for n in item]]
    return tokens, len(nouns)


def test_datamodule_serves_description_features_instead_of_text(synthetic_root, tmp_path):
    tokens, dim = concept_tokens(synthetic_root / "synthetic")
    order = sorted(tokens, reverse=True)
    path = tmp_path / "desc.h5"
    with h5py.File(path, "w") as handle:
        handle["features"] = padded({i: tokens[i] for i in order}, 6)
        handle["ids"] = np.array(order, dtype="S")
    kwargs = tiny_datamodule_kwargs(synthetic_root, roles=["source", "target", "description"], descriptions=None)
    dm = CCRDataModule(**kwargs, description_features=DescriptionFeatureSpec(path=str(path)))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "description" not in batch["text"] and batch["description_features"].shape[2] == dim
    for features, mask, caption_id in zip(
        batch["description_features"], batch["description_mask"], batch["caption_ids"], strict=True
    ):
        expected = tokens[caption_id.split("#")[0]]
        assert torch.equal(features[mask], torch.from_numpy(expected))
    gallery = next(iter(dm.val_dataloader()[1]))
    for features, mask, visual_id in zip(
        gallery["description_features"], gallery["description_mask"], gallery["visual_ids"], strict=True
    ):
        assert torch.equal(features[mask], torch.from_numpy(tokens[visual_id]))
    missing = (synthetic_root / "synthetic/FeatureData/val_id.txt").read_text().split()[3]
    kept = [i for i in order if i != missing]
    with h5py.File(tmp_path / "partial.h5", "w") as handle:
        handle["features"] = padded({i: tokens[i] for i in kept}, 6)
        handle["ids"] = np.array(kept, dtype="S")
    dm = CCRDataModule(**kwargs, description_features=DescriptionFeatureSpec(path=str(tmp_path / "partial.h5")))
    with pytest.raises(DataFormatError, match=f"id {missing}: no description features .*the val split"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="description_features"):
        CCRDataModule(**kwargs)


def feature_batch(index: list[int], dim: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = len(index)
    ids = torch.randint(1, 30, (batch, 6), generator=generator)
    text = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return {
        "visual": torch.randn(batch, 1, 8, generator=generator),
        "visual_mask": torch.ones(batch, 1, dtype=torch.bool),
        "visual_index": torch.tensor(index),
        "text": {"source": text, "target": text},
        "description_features": torch.randn(batch, 5, dim, generator=generator) * mask[..., None],
        "description_mask": mask,
    }


def test_leccr_reads_description_features_without_its_text_encoder():
    torch.manual_seed(0)
    small = dict(visual_dim=8, vocab_size=30, text_hidden=16, text_layers=1, text_heads=2, visual_width=16)
    small.update(embed_dim=8, num_slots=2, slot_layers=1, interaction_layers=1, attention_heads=2)
    model = LECCR(**small, description_feature_dim=12)
    assert model.description_proj.in_features == 12
    calls = []
    model.text.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    losses = model.compute_losses(feature_batch([0, 1, 0, 2], 12))
    assert len(calls) == 2 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.description_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="D=7, but description_feature_dim=12"):
        model.compute_losses(feature_batch([0, 1], 7))
    without = {k: v for k, v in feature_batch([0, 1], 12).items() if not k.startswith("description")}
    with pytest.raises(ValueError, match="description_features"):
        model.compute_losses(without)


def test_cli_trains_and_tests_leccr_on_description_features(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    folder = write_synthetic_collection(root, SynthConfig(n_train=40, n_val=12, n_test=12))
    tokens, dim = concept_tokens(folder)
    features = tmp_path / "features"
    features.mkdir()
    for visual_id, array in tokens.items():
        np.save(features / f"{visual_id}.npy", array)
    cli = lightning_main(
        [
            "fit",
            "--config",
            str(CONFIGS / "experiments/leccr/tiny.yaml"),
            "--data.init_args.root",
            str(root),
            "--data.init_args.description_features",
            json.dumps({"path": str(features)}),
            "--model.init_args.description_feature_dim",
            str(dim),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.logger.init_args.save_dir",
            str(out),
            "--trainer.max_epochs",
            "1",
            "--test_after_fit",
            "true",
        ]
    )
    assert cli.model.description_proj.in_features == dim
    assert_consistent_report(written_test_metrics(out))
