"""SCAN precomp reader, its errors, the PrecompDataModule batch contract and the RVSE++ recipes through the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.datamodule import CCRDataModule
from leccr_lightning.data.datasets import VisualItems
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.precomp import (
    PrecompDataModule,
    RegionCaptionAugmentation,
    build_word_vocab,
    read_precomp_split,
    read_scan_vocab,
    word_level_tokenizer,
    write_precomp,
)
from tests.helpers import tiny_datamodule_kwargs

EPOCHS = 10
WORDS = ["dog", "cat", "horse", "bird", "ball", "tree", "car", "boat", "kite", "bench", "lamp", "cake"]


def learnable_split(folder: Path, split: str, n_images: int, seed: int, regions: int = 4, dim: int = 16) -> None:
    """Image i shows two concepts; its regions are their prototypes plus noise; its 5 captions name them, and their
    caption embeddings (``{split}_caps_emb.npy``, unit norm) are the concept bags plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).normal(size=(len(WORDS), dim))
    captions, features, embeddings = [], [], []
    for _ in range(n_images):
        concepts = rng.choice(len(WORDS), 2, replace=False)
        picks = rng.choice(concepts, regions)
        features.append(prototypes[picks] + 0.3 * rng.normal(size=(regions, dim)))
        captions += [f"a {WORDS[concepts[k % 2]]} and a {WORDS[concepts[1 - k % 2]]} , photo {k}" for k in range(5)]
        bags = np.zeros((5, len(WORDS)))
        bags[:, concepts] = 1.0
        embeddings.append(bags + 0.1 * rng.normal(size=bags.shape))
    write_precomp(folder, split, captions, np.stack(features))
    unit = np.concatenate(embeddings)
    np.save(folder / f"{split}_caps_emb.npy", (unit / np.linalg.norm(unit, axis=1, keepdims=True)).astype(np.float32))


def captions_for(n_images: int) -> list[str]:
    return [f"image {i} caption {k}" for i in range(n_images) for k in range(5)]


def test_reader_ids_texts_and_region_rows(tmp_path):
    features = np.random.default_rng(1).normal(size=(3, 4, 6)).astype(np.float32)
    write_precomp(tmp_path, "test", captions_for(3), features)
    split = read_precomp_split(tmp_path, "test")
    assert split.captions.ids[:6] == ("0#enc#0", "0#enc#1", "0#enc#2", "0#enc#3", "0#enc#4", "1#enc#0")
    assert split.captions.texts[7] == "image 1 caption 2" and split.num_images == 3
    assert split.external_ids is None and not split.store.repeated and split.store.dim == 6
    visual, mask = VisualItems(split.store.names, split.store, "test").batch([2, 0, 2])
    assert torch.equal(visual, torch.from_numpy(features[[2, 0, 2]])) and bool(mask.all())
    copy = pickle.loads(pickle.dumps(split.store))
    assert copy._array is None  # a worker re-maps the file instead of receiving a pickled copy of the array
    assert torch.equal(VisualItems(copy.names, copy, "test").batch([1])[0][0], torch.from_numpy(features[1]))


def test_repeated_image_release_reads_every_fifth_row(tmp_path):
    features = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    write_precomp(tmp_path, "dev", captions_for(4), np.repeat(features, 5, axis=0))
    split = read_precomp_split(tmp_path, "dev")
    assert split.store.repeated and split.num_images == 4
    visual, mask = VisualItems(split.store.names, split.store, "dev").batch([3, 1])
    assert visual.shape == (2, 1, 6) and torch.equal(visual[:, 0], torch.from_numpy(features[[3, 1]]))
    regions = np.random.default_rng(3).normal(size=(2, 3, 6)).astype(np.float32)
    write_precomp(tmp_path, "test", captions_for(2), np.repeat(regions, 5, axis=0))
    store = read_precomp_split(tmp_path, "test").store
    assert torch.equal(VisualItems(store.names, store, "t").batch([1])[0][0], torch.from_numpy(regions[1]))


def test_ids_file_per_image_or_per_caption_and_max_images(tmp_path):
    features = np.zeros((3, 2), dtype=np.float32)
    write_precomp(tmp_path, "a", captions_for(3), features, ids=["11", "22", "33"])
    assert read_precomp_split(tmp_path, "a").external_ids == ["11", "22", "33"]
    write_precomp(tmp_path, "b", captions_for(3), features, ids=[str(10 + i // 5) for i in range(15)])
    limited = read_precomp_split(tmp_path, "b", max_images=2)
    assert limited.external_ids == ["10", "11"] and limited.num_images == 2 and len(limited.captions) == 10
    bad_ids = [str(10 + i // 5) for i in range(15)]
    bad_ids[7] = "99"
    write_precomp(tmp_path, "c", captions_for(3), features, ids=bad_ids)
    with pytest.raises(DataFormatError, match=r"c_ids\.txt: line 8: id 99 differs from 11"):
        read_precomp_split(tmp_path, "c")
    write_precomp(tmp_path, "d", captions_for(3), features, ids=["1", "2"])
    with pytest.raises(DataFormatError, match=r"d_ids\.txt: 2 ids; expected one per image \(3\)"):
        read_precomp_split(tmp_path, "d")


def test_errors_name_the_file_and_line(tmp_path):
    write_precomp(tmp_path, "short", captions_for(2)[:7], np.zeros((2, 4)))
    with pytest.raises(DataFormatError, match=r"short_caps\.txt: line 7: .*7 captions, not a multiple of 5"):
        read_precomp_split(tmp_path, "short")
    empty = captions_for(2)
    empty[3] = "  "
    write_precomp(tmp_path, "empty", empty, np.zeros((2, 4)))
    with pytest.raises(DataFormatError, match=r"empty_caps\.txt: line 4: empty caption"):
        read_precomp_split(tmp_path, "empty")
    write_precomp(tmp_path, "rows", captions_for(2), np.zeros((3, 4)))
    with pytest.raises(DataFormatError, match=r"rows_ims\.npy: 3 feature rows for 10 captions; expected 2"):
        read_precomp_split(tmp_path, "rows")
    write_precomp(tmp_path, "norep", captions_for(2), np.arange(40.0).reshape(10, 4))
    with pytest.raises(DataFormatError, match=r"norep_ims\.npy: 10 rows = one per caption, but rows 0..4 differ"):
        read_precomp_split(tmp_path, "norep")
    write_precomp(tmp_path, "bytes", captions_for(1), np.zeros((1, 4)))
    path = tmp_path / "bytes_caps.txt"
    path.write_bytes(path.read_bytes().replace(b"image 0 caption 1", b"image \xff caption 1"))
    with pytest.raises(DataFormatError, match=r"bytes_caps\.txt: line 2: bytes that are not UTF-8"):
        read_precomp_split(tmp_path, "bytes")


def test_word_vocabulary_and_tokenizer_hand_checked(tmp_path):
    vocab = build_word_vocab(["A dog, a cat.", "a dog runs"], min_count=2)
    assert vocab == {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "a": 4, "dog": 5, "<mask>": 6}
    tokenizer = word_level_tokenizer(vocab)
    assert tokenizer("A DOG sleeps")["input_ids"] == [1, 4, 5, 3, 2]
    assert tokenizer.pad_token_id == 0 and len(tokenizer) == 7
    released = tmp_path / "f30k_precomp_vocab.json"
    released.write_text(json.dumps({"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "kite": 4}}))
    assert read_scan_vocab(released) == {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "kite": 4, "<mask>": 5}
    released.write_text(json.dumps({"word2idx": {"<pad>": 0, "kite": 1}}))
    with pytest.raises(DataFormatError, match=r"vocab\.json: word2idx lacks the special words"):
        read_scan_vocab(released)


def _signature(value):
    """Type, dtype and rank of every entry of a batch (the contract, not the sizes)."""
    if isinstance(value, dict):
        return {key: _signature(v) for key, v in value.items()}
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, value.dim())
    if isinstance(value, list):
        return ("list", type(value[0]))
    return type(value)


def test_datamodule_batches_follow_the_ccr_contract(tmp_path, synthetic_root):
    learnable_split(tmp_path / "f30k_precomp", "train", 12, seed=1)
    learnable_split(tmp_path / "f30k_precomp", "dev", 6, seed=2)
    learnable_split(tmp_path / "f30k_precomp", "test", 6, seed=3)
    precomp = PrecompDataModule(str(tmp_path), batch_size=8, eval_batch_size=4, word_min_count=1, val_max_images=4)
    ccr = CCRDataModule(**tiny_datamodule_kwargs(synthetic_root, roles=["source", "target"]))
    for module in (precomp, ccr):
        module.setup("fit")
    train = next(iter(precomp.train_dataloader()))
    assert _signature(train) == _signature(next(iter(ccr.train_dataloader())))
    for ours, theirs in zip(precomp.val_dataloader(), ccr.val_dataloader(), strict=True):
        assert _signature(next(iter(ours))) == _signature(next(iter(theirs)))
    assert train["visual"].shape == (8, 4, 16) and precomp.visual_dim == 16
    assert [int(c.split("#")[0]) for c in train["caption_ids"]] == train["visual_index"].tolist()
    assert torch.equal(train["text"]["source"]["input_ids"], train["text"]["target"]["input_ids"])
    assert len(precomp.train_dataloader()) == 60 // 8
    queries, gallery = (loader.dataset for loader in precomp.val_dataloader())
    assert len(queries) == 20 and len(gallery) == 4
    assert queries.collate([0, 6, 19])["target"].tolist() == [0, 1, 3]
    assert precomp.vocab_size == len(precomp.tokenizer) and precomp.tokenizer.pad_token_id == 0
    with pytest.raises(ValueError, match="subset of"):
        PrecompDataModule(str(tmp_path), roles=["target"])
    with pytest.raises(FileNotFoundError, match="precomp folder"):
        PrecompDataModule(str(tmp_path), collection="coco_precomp")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "dataset"),
    [("rvsepp", "f30k"), ("rvsepp", "coco"), ("bcls", "f30k"), ("listwise", "coco"), ("unified", "f30k")],
)
def test_paper_recipe_fits_and_tests_on_a_precomp_folder(tmp_path, method, dataset):
    """The paper recipe (sizes shrunk; BCLS / Listwise read the caption-embedding file of the precomp folder) learns
    the concept structure: R@1 far above chance."""
    folder = tmp_path / f"{dataset}_precomp"
    learnable_split(folder, "train", 96, seed=1)
    learnable_split(folder, "dev", 8, seed=2)
    learnable_split(folder, "test" if dataset == "f30k" else "testall", 10, seed=3)
    cli = lightning_main(
        [
            "fit",
            "--config",
            f"configs/experiments/{method}/{dataset}.yaml",
            "--data.init_args.root",
            str(tmp_path),
            "--data.init_args.word_min_count",
            "1",
            "--data.init_args.batch_size",
            "32",
            "--data.init_args.num_workers",
            "0",
            "--model.init_args.embed_dim",
            "32",
            "--model.init_args.word_dim",
            "32",
            "--model.init_args.optimizer.init_args.lr",
            "0.005",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            str(EPOCHS),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--test_after_fit",
            "true",
        ]
    )
    assert cli.trainer.global_step == EPOCHS * (480 // 32)
    metrics = json.loads(Path(cli.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    assert metrics["test/t2v_r1"] >= 40.0 and metrics["test/v2t_r1"] >= 40.0  # chance: 10 % (10 test images)


def _augmentation_batch() -> dict:
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])
    tokens = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    return {
        "visual": torch.arange(2 * 36 * 3, dtype=torch.float32).view(2, 36, 3) + 1,
        "visual_mask": torch.ones(2, 36, dtype=torch.bool),
        "text": {"source": tokens},
        "caption_ids": ["0#enc#0", "3#enc#2"],
    }


def test_region_caption_augmentation_compacts_kept_regions_and_tokens():
    augmentation = RegionCaptionAugmentation(region_drop=0.5, token_perturb=0.9, seed=3)
    batch = _augmentation_batch()
    out = augmentation(batch, epoch=0, mask_id=9, vocab_size=10, pad_id=0)
    for row in range(2):
        kept = out["visual"][row, out["visual_mask"][row]]
        assert 0 < len(kept) < 36 and not out["visual_mask"][row, len(kept) :].any()
        assert (out["visual"][row, len(kept) :] == 0).all()
        original = {tuple(r.tolist()) for r in batch["visual"][row]}
        assert all(tuple(r.tolist()) in original for r in kept)
    assert out["visual"].shape[1] == int(out["visual_mask"].sum(1).max())
    text = out["text"]["source"]
    lengths = text["attention_mask"].sum(1)
    assert (lengths <= batch["text"]["source"]["attention_mask"].sum(1)).all() and (lengths > 0).all()
    assert torch.equal(
        text["input_ids"][text["attention_mask"] == 0],
        torch.zeros(int((text["attention_mask"] == 0).sum()), dtype=torch.long),
    )
    assert batch["visual"].shape == (2, 36, 3), "the input batch is left unchanged"


def test_region_caption_augmentation_draws_depend_on_seed_epoch_and_caption_only():
    augmentation = RegionCaptionAugmentation(seed=0)
    batch = _augmentation_batch()
    first = augmentation(batch, epoch=4, mask_id=9, vocab_size=10, pad_id=0)
    again = augmentation(batch, epoch=4, mask_id=9, vocab_size=10, pad_id=0)
    assert torch.equal(first["visual_mask"], again["visual_mask"])
    assert torch.equal(first["text"]["source"]["input_ids"], again["text"]["source"]["input_ids"])
    swapped = {
        "visual": batch["visual"].flip(0),
        "visual_mask": batch["visual_mask"],
        "text": {"source": {k: v.flip(0) for k, v in batch["text"]["source"].items()}},
        "caption_ids": batch["caption_ids"][::-1],
    }
    alone = augmentation(swapped, epoch=4, mask_id=9, vocab_size=10, pad_id=0)
    assert torch.equal(alone["visual_mask"].sum(1).flip(0), first["visual_mask"].sum(1))
    other_epoch = augmentation(batch, epoch=5, mask_id=9, vocab_size=10, pad_id=0)
    assert not torch.equal(other_epoch["visual_mask"], first["visual_mask"])
    single = dict(batch, visual=batch["visual"][:, :1], visual_mask=batch["visual_mask"][:, :1])
    assert augmentation.drop_regions(single["visual"], single["visual_mask"], [torch.Generator()] * 2)[1].all()
    with pytest.raises(ValueError, match="mask token"):
        augmentation(batch, epoch=0, mask_id=None, vocab_size=10, pad_id=0)
    with pytest.raises(ValueError, match="region_drop"):
        RegionCaptionAugmentation(region_drop=1.0)
