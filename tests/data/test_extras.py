"""Per-item / per-caption extras: the stores, the DataModule wiring into every batch kind, YAML configuration, and the
errors for missing ids; a method that reads an unconfigured extra is refused at fit start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.data.datamodule import CCRDataModule
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import ItemArrays
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list
from tests.helpers import experiment, tiny_datamodule_kwargs


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extras")
    write_synthetic_collection(root, SynthConfig(n_train=20, n_val=6, n_test=6, seed=5))
    return root


def item_arrays(folder: Path, ids: list[str], seed: int) -> dict[str, np.ndarray]:
    """One [L_i, 3] array per id (L_i = 1 + i % 3) in ``folder/<id>.npy``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(ids):
        arrays[name] = rng.normal(size=(1 + i % 3, 3)).astype(np.float32)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays


def test_item_arrays_pad_with_a_mask_from_a_folder_or_an_array(collection, tmp_path):
    folder = collection / "synthetic"
    ids = read_id_list(folder / "FeatureData/train_id.txt")
    arrays = item_arrays(tmp_path / "per_item", ids, seed=0)
    bound = ItemArrays(str(tmp_path / "per_item")).bind(folder, "train", ids, Path("train_id.txt"))
    out = bound.batch(np.array([2, 0]))
    assert out["values"].shape == (2, 3, 3) and out["mask"].tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(out["values"][0], torch.from_numpy(arrays[ids[2]]))
    assert torch.equal(out["values"][1, 1:], torch.zeros(2, 3))
    stacked = np.stack([np.resize(arrays[i], (2, 3)) for i in ids])
    np.save(tmp_path / "stacked.npy", stacked)
    (tmp_path / "stacked_ids.txt").write_text("".join(f"{i}\n" for i in reversed(ids)))
    reversed_rows = ItemArrays(str(tmp_path / "stacked.npy"), ids=str(tmp_path / "stacked_ids.txt"))
    out = reversed_rows.bind(folder, "train", ids[:2], Path("train_id.txt")).batch(np.array([0]))
    assert torch.equal(out["values"][0], torch.from_numpy(stacked[len(ids) - 1]))


def test_missing_ids_are_errors_naming_the_store_and_the_id(collection, tmp_path):
    folder = collection / "synthetic"
    ids = read_id_list(folder / "FeatureData/train_id.txt")
    item_arrays(tmp_path / "some", ids[:-1], seed=1)
    with pytest.raises(DataFormatError, match=f"{ids[-1]}"):
        ItemArrays(str(tmp_path / "some")).bind(folder, "train", ids, Path("train_id.txt"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ItemArrays("nowhere/{split}").bind(folder, "val", ids, Path("val_id.txt"))
    with pytest.raises(ValueError, match="level"):
        ItemArrays(str(tmp_path / "some"), level="pixel")


def test_datamodule_serves_item_and_caption_extras_in_every_batch_kind(collection):
    folder = collection / "synthetic"
    for split in ("train", "val", "test"):
        item_arrays(folder / "extras" / split, read_id_list(folder / f"FeatureData/{split}_id.txt"), seed=2)
    for split, name in (("train", "synthtrain_enc"), ("val", "synthval_de"), ("test", "synthtest_de")):
        caption_ids = read_caption_file(folder / f"TextData/{name}.caption.txt").ids
        item_arrays(folder / "caption_extras" / split, caption_ids, seed=3)
    extras = {
        "regions": ItemArrays("extras/{split}"),
        "sentence": ItemArrays("caption_extras/{split}", level="caption"),
    }
    data = CCRDataModule(**tiny_datamodule_kwargs(collection, extras=extras, batch_size=5, eval_batch_size=4))
    data.setup("fit")
    data.setup("test")
    train = next(iter(data.train_dataloader()))
    assert set(train["extras"]) == {"regions", "sentence"}
    assert train["extras"]["regions"]["values"].shape[0] == 5 and train["extras"]["sentence"]["mask"].shape[0] == 5
    query_loader, gallery_loader = data.test_dataloader()
    assert set(next(iter(query_loader))["extras"]) == {"sentence"}
    assert set(next(iter(gallery_loader))["extras"]) == {"regions"}


def test_extras_come_from_yaml_and_a_method_reading_a_missing_one_is_refused(
    collection, tmp_path, run_cli, monkeypatch
):
    from leccr_lightning.methods.baseline import DualEncoderBaseline

    folder = collection / "synthetic"
    ids = read_id_list(folder / "FeatureData/train_id.txt")
    item_arrays(folder / "yaml_extras", ids + read_id_list(folder / "FeatureData/val_id.txt"), seed=6)
    extras = json.dumps(
        {"regions": {"class_path": "leccr_lightning.data.extras.ItemArrays", "init_args": {"path": "yaml_extras"}}}
    )
    cli = run_cli(
        "fit",
        experiment("baseline"),
        collection,
        tmp_path,
        "--data.init_args.extras",
        extras,
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
    )
    assert isinstance(cli.datamodule.extras["regions"], ItemArrays)
    monkeypatch.setattr(DualEncoderBaseline, "required_extras", ("tags",))
    with pytest.raises(ValueError, match="data.init_args.extras"):
        run_cli("fit", experiment("baseline"), collection, tmp_path / "refused", "--trainer.max_steps", "1")
