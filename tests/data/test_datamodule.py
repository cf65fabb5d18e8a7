"""CCRDataModule on the synthetic collection: the batch contract, eval ground truth, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from leccr_lightning.data.datamodule import CCRDataModule
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import read_caption_file
from tests.helpers import tiny_datamodule_kwargs


def test_training_batch_contract(synthetic_root):
    dm = CCRDataModule(**tiny_datamodule_kwargs(synthetic_root, roles=["source", "target", "back", "description"]))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["visual"].shape == (16, 1, dm.visual_dim) and batch["visual_mask"].all()
    assert set(batch["text"]) == {"source", "target", "back", "description"}
    for tokens in batch["text"].values():
        assert tokens["input_ids"].shape == tokens["attention_mask"].shape
        assert tokens["input_ids"].max() < dm.vocab_size
    train = dm.split("train")["train"]
    for i, cap_id in enumerate(batch["caption_ids"]):
        visual_id = cap_id.split("#")[0]
        assert train.items.ids[int(batch["visual_index"][i])] == visual_id


def test_eval_split_ground_truth_from_ids(synthetic_root):
    dm = CCRDataModule(**tiny_datamodule_kwargs(synthetic_root, query_roles=["query", "translated"]))
    dm.setup("test")
    queries, gallery = dm.test_dataloader()
    qb, gb = next(iter(queries)), next(iter(gallery))
    assert qb["kind"] == "query" and gb["kind"] == "gallery"
    assert set(qb["text"]) == {"query", "translated"}
    ids = dm.split("test")["gallery"].items.ids
    for cap_id, target in zip(qb["caption_ids"], qb["target"].tolist(), strict=True):
        assert ids[target] == cap_id.split("#")[0]
    counts = torch.bincount(torch.as_tensor(dm.split("test")["queries"].targets), minlength=len(ids))
    assert counts.min() >= 1 and counts.max() > counts.min()


def test_tokenizer_is_cached_and_shared_between_runs(synthetic_root):
    first = CCRDataModule(**tiny_datamodule_kwargs(synthetic_root))
    second = CCRDataModule(**tiny_datamodule_kwargs(synthetic_root))
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    assert list((synthetic_root / "synthetic" / "cache").glob("wordpiece-v2-500-*.json"))


def test_synthetic_collection_is_deterministic_and_marks_noise(tmp_path):
    config = SynthConfig(n_train=20, n_val=5, n_test=5, mt_noise=0.5, seed=3)
    a = write_synthetic_collection(tmp_path / "a", config)
    b = write_synthetic_collection(tmp_path / "b", config)
    for path in (a / "TextData").iterdir():
        assert path.read_bytes() == (b / "TextData" / path.name).read_bytes()
    assert (a / "FeatureData/synthetic_feat/feature.bin").read_bytes() == (
        b / "FeatureData/synthetic_feat/feature.bin"
    ).read_bytes()
    noisy = json.loads((a / "MANIFEST.json").read_text())["noisy_translations"]
    n_mt = len(read_caption_file(a / "TextData/synthtrain_google_enc2de.caption.txt"))
    assert 0.2 < len(noisy) / n_mt < 0.8
    assert all("#enc2de#" in cap_id for cap_id in noisy)


@pytest.fixture
def broken_root(tmp_path):
    root = tmp_path / "vs"
    write_synthetic_collection(root, SynthConfig(n_train=10, n_val=4, n_test=4, seed=5))
    return root


def test_missing_translation_names_the_source_caption(broken_root):
    path = broken_root / "synthetic/TextData/synthtrain_google_enc2de.caption.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    missing = lines.pop(3).split()[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source_only = CCRDataModule(**tiny_datamodule_kwargs(broken_root, roles=["source"]))
    assert len(source_only.split("train")["train"]) == len(lines) + 1
    with pytest.raises(DataFormatError, match=f"no caption {missing} aligned with {missing.replace('enc2de', 'enc')}"):
        CCRDataModule(**tiny_datamodule_kwargs(broken_root)).split("train")


def test_missing_feature_and_description_name_the_id(broken_root):
    ids = broken_root / "synthetic/FeatureData/test_id.txt"
    ids.write_text(ids.read_text() + "imgte999999\n")
    with pytest.raises(KeyError, match="visual id imgte999999 .*test_id.txt.* has no feature"):
        CCRDataModule(**tiny_datamodule_kwargs(broken_root)).split("test")
    shutil.rmtree(broken_root / "synthetic/descriptions")
    kwargs = tiny_datamodule_kwargs(broken_root, roles=["source", "target", "description"])
    with pytest.raises(DataFormatError, match="imgtr000000.txt: id imgtr000000: missing MLLM description"):
        CCRDataModule(**kwargs).split("train")
    assert CCRDataModule(**{**kwargs, "allow_missing_descriptions": True}).split("train")


def test_unknown_role_and_missing_folder_are_clear(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="unknown training role 'caption'"):
        CCRDataModule(**tiny_datamodule_kwargs(synthetic_root, roles=["source", "caption"]))
    with pytest.raises(FileNotFoundError, match="leccr synth"):
        CCRDataModule(**tiny_datamodule_kwargs(tmp_path))


def test_trained_tokenizer_is_identical_in_every_process(synthetic_root):
    """The same captions give the same vocabulary and ids in separate processes (different hash seeds)."""
    script = (
        "import json; from leccr_lightning.data.text import train_wordpiece; "
        "from leccr_lightning.data.visualsearch import read_caption_file; "
        f"c = read_caption_file({str(synthetic_root / 'synthetic/TextData/synthtrain_enc.caption.txt')!r}).texts; "
        "print(json.dumps(sorted(train_wordpiece(c, 300).get_vocab().items())))"
    )
    vocabs = [
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert vocabs[0] == vocabs[1] and len(vocabs[0]) > 100


@pytest.mark.parametrize(("size", "replicas"), [(64, 2), (61, 2), (50, 4)])
def test_ranks_together_read_the_one_process_batches(size: int, replicas: int) -> None:
    """W ranks at batch size B / W read, batch by batch, the items of one process at batch size B (padding aside);
    an epoch is one permutation of every item, drawn from the seed and the epoch alone."""
    from leccr_lightning.data.datasets import EpochShuffleSampler

    batch = 8
    single = EpochShuffleSampler(size, seed=3)
    ranks = [EpochShuffleSampler(size, seed=3, num_replicas=replicas, rank=r) for r in range(replicas)]
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        order = list(single)
        assert sorted(order) == list(range(size))
        shares = [list(rank) for rank in ranks]
        assert {len(share) for share in shares} == {-(-size // replicas)}
        step = batch // replicas
        for k in range(0, size // batch):
            together = sorted(i for share in shares for i in share[k * step : (k + 1) * step])
            assert together == sorted(order[k * batch : (k + 1) * batch])
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first
