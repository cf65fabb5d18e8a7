"""Raw images end to end: synthetic pictures, the image store (folder and MSCOCO id-map layouts, timm preprocessing),
the ``images`` feature kind in the DataModule, LECCR over a timm backbone, and the CLI on tiny_images.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leccr_lightning.data.datamodule import CCRDataModule, FeatureSpec
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import open_feature_store
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.synthetic import SynthConfig, render_picture, shape_mask, write_synthetic_collection
from leccr_lightning.methods.leccr import LECCR
from tests.helpers import (
    experiment,
    tiny_datamodule_kwargs,
    written_test_metrics,
)


def write_png(path: Path, colour: tuple[int, int, int], size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_synthetic_collection(root, SynthConfig(n_train=24, n_val=8, n_test=8, write_images=True))
    return root


# --- synthetic pictures --------------------------------------------------------------------------------------------
def test_shape_masks_have_the_hand_counted_pixels():
    dy, dx = np.mgrid[-3:4, -3:4].astype(float)
    assert shape_mask("square", dx, dy, 1.0).sum() == 9
    assert shape_mask("disc", dx, dy, 2.0).sum() == 13
    assert shape_mask("cross", dx, dy, 3.0).sum() == 7 * 3 + 7 * 3 - 9
    assert shape_mask("ring", dx, dy, 2.0).sum() == 13 - 1
    assert shape_mask("triangle", dx, dy, 2.0).sum() == 1 + 1 + 3 + 3 + 5


def test_rendered_pictures_show_each_concept_colour_and_are_seeded():
    rng = np.random.default_rng(0)
    picture = render_picture([0, 9], 32, 0.0, rng)
    assert picture.shape == (32, 32, 3) and picture.min() >= 0 and picture.max() <= 1
    reddish = (picture[..., 0] > 0.8) & (picture[..., 1] < 0.2) & (picture[..., 2] < 0.2)
    greenish = (picture[..., 1] > 0.6) & (picture[..., 0] < 0.2) & (picture[..., 2] < 0.2)
    assert reddish.sum() > 20 and greenish.sum() > 20
    again = render_picture([0, 9], 32, 0.0, np.random.default_rng(0))
    assert np.array_equal(picture, again)


def test_synth_writes_one_png_per_item_without_changing_the_other_files(image_root, tmp_path):
    folder = image_root / "synthetic"
    ids = [
        v for split in ("train", "val", "test") for v in (folder / f"FeatureData/{split}_id.txt").read_text().split()
    ]
    pictures = sorted(p.stem for p in (folder / "images").glob("*.png"))
    assert pictures == sorted(ids)
    with Image.open(folder / "images" / f"{ids[0]}.png") as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    plain = write_synthetic_collection(tmp_path, SynthConfig(n_train=24, n_val=8, n_test=8))
    for name in ("TextData/synthtrain_enc.caption.txt", "FeatureData/synthetic_feat/feature.bin"):
        assert (plain / name).read_bytes() == (folder / name).read_bytes()
    with pytest.raises(ValueError, match="write_images"):
        write_synthetic_collection(tmp_path / "v", SynthConfig(video=True, write_images=True))


# --- the image store -----------------------------------------------------------------------------------------------
def test_folder_store_preprocesses_with_the_backbone_config(tmp_path):
    write_png(tmp_path / "pics" / "white.png", (255, 255, 255))
    write_png(tmp_path / "pics" / "black.jpg", (0, 0, 0))
    store = ImageFolderStore(tmp_path / "pics", model_name="test_resnet", image_size=16)
    assert "white" in store and "black" in store and "grey" not in store and store.dim == 3
    rows = np.concatenate([store.rows_of("white"), store.rows_of("black"), store.rows_of("white")])
    pixels, mask = store.single_row_batch(rows)
    assert pixels.shape == (3, 3, 16, 16) and mask.shape == (3, 1) and mask.all()
    # test_resnet normalises with mean = std = 0.5: white -> 1, black -> -1
    assert torch.allclose(pixels[0], torch.ones(3, 16, 16)) and torch.allclose(pixels[1], -torch.ones(3, 16, 16))
    train = ImageFolderStore(tmp_path / "pics", model_name="test_resnet", image_size=16, augment=True)
    assert train.single_row_batch(rows)[0].shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown"):
        ImageFolderStore(tmp_path / "pics", model_name="no_such_backbone")


def test_train_transform_is_random_and_eval_transform_is_not(tmp_path):
    picture = np.zeros((24, 24, 3), dtype=np.uint8)
    picture[:, :12] = 255
    Image.fromarray(picture).save(tmp_path / "half.png")
    rows = np.zeros(8, dtype=np.int64)
    evaluation = ImageFolderStore(tmp_path, model_name="test_resnet", image_size=16)
    assert torch.equal(*evaluation.single_row_batch(rows[:2])[0])
    train = ImageFolderStore(tmp_path, model_name="test_resnet", image_size=16, augment=True)
    torch.manual_seed(0)
    views = train.single_row_batch(rows)[0]
    assert any(not torch.equal(views[0], view) for view in views[1:])


def test_missing_or_unreadable_images_are_errors_naming_id_and_path(tmp_path):
    write_png(tmp_path / "pics" / "a.png", (10, 20, 30))
    store = ImageFolderStore(tmp_path / "pics", model_name="test_resnet", image_size=16)
    with pytest.raises(DataFormatError, match=r"pics/b\.jpg.*id b"):
        store.check_ids(["a", "b"], "train_id.txt")
    (tmp_path / "pics" / "c.jpg").write_bytes(b"not an image")
    broken = ImageFolderStore(tmp_path / "pics", model_name="test_resnet", image_size=16)
    with pytest.raises(DataFormatError, match=r"c\.jpg.*not a readable image"):
        broken.single_row_batch(broken.rows_of("c"))


def test_mscoco_id_map_layout(tmp_path):
    write_png(tmp_path / "all_pics" / "COCO_val2014_000000000042.jpg", (255, 255, 255))
    (tmp_path / "image_ids.txt").write_text("42 COCO_val2014_000000000042.jpg\n7 COCO_val2014_000000000007.jpg\n")
    store = open_feature_store(
        "images", tmp_path / "all_pics", tmp_path / "image_ids.txt", image_model="test_resnet", image_size=8
    )
    assert isinstance(store, ImageFolderStore) and "42" in store and "7" not in store
    pixels, _ = store.single_row_batch(store.rows_of("42"))
    assert torch.allclose(pixels, torch.ones(1, 3, 8, 8))
    with pytest.raises(DataFormatError, match=r"COCO_val2014_000000000007\.jpg.*id 7"):
        store.check_ids(["42", "7"], "ja_test_id.txt")
    with pytest.raises(DataFormatError, match=r"image_ids\.txt.*id 9"):
        store.check_ids(["9"], "ja_test_id.txt")
    (tmp_path / "image_ids.txt").write_text("42\n")
    with pytest.raises(DataFormatError, match="line 1"):
        open_feature_store("images", tmp_path / "all_pics", tmp_path / "image_ids.txt", image_model="test_resnet")


def test_datamodule_serves_pixels_with_train_and_eval_transforms(image_root):
    spec = FeatureSpec(path="images", kind="images", image_model="test_resnet", image_size=32)
    dm = CCRDataModule(**tiny_datamodule_kwargs(image_root, features=spec, roles=["source", "target", "description"]))
    dm.setup("fit")
    assert dm.visual_dim == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["visual"].shape == (16, 3, 32, 32) and batch["visual_mask"].shape == (16, 1)
    assert "description" in batch["text"]
    queries, gallery = dm.val_dataloader()
    gallery_batch = next(iter(gallery))
    assert gallery_batch["visual"].shape == (8, 3, 32, 32) and gallery_batch["visual_mask"].all()
    first_step = {
        split: type(dm.split(split)[key].items.store.transform.transforms[0]).__name__
        for split, key in (("train", "train"), ("val", "gallery"))
    }
    assert first_step["train"].startswith("RandomResizedCrop") and first_step["val"] == "Resize"


# --- LECCR over a timm backbone ------------------------------------------------------------------------------------
def pixel_batch(index: list[int]) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = len(index)
    ids = torch.randint(1, 30, (batch, 6), generator=generator)
    text = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {
        "visual": torch.randn(batch, 3, 32, 32, generator=generator),
        "visual_mask": torch.ones(batch, 1, dtype=torch.bool),
        "visual_index": torch.tensor(index),
        "text": {"source": text, "target": text, "description": text},
    }


def test_leccr_timm_variant_fine_tunes_the_backbone_end_to_end():
    torch.manual_seed(0)
    model = LECCR(
        visual_dim=3,
        vocab_size=30,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        visual_encoder="timm",
        timm_model="test_resnet",
        visual_width=16,
        visual_pooling="mean",
        embed_dim=8,
        num_slots=2,
        slot_layers=1,
        interaction_layers=1,
        attention_heads=2,
    )
    losses = model.compute_losses(pixel_batch([0, 1, 2, 0]))
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = [p.grad for p in model.visual.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    views = model.eval().encode_gallery(pixel_batch([0, 1, 2]))
    assert views["gallery"].shape == (3, 8)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode_gallery({**pixel_batch([0]), "visual": torch.randn(1, 1, 3)})
    with pytest.raises(ValueError, match="visual_dim"):
        LECCR(visual_dim=32, vocab_size=30, visual_encoder="timm", timm_model="test_resnet")


def test_cli_fit_then_test_on_tiny_images_learns(tmp_path, run_cli):
    root, out = tmp_path / "data", tmp_path / "run"
    write_synthetic_collection(root, SynthConfig(n_train=150, n_val=20, n_test=20, write_images=True))
    config = experiment("leccr", "tiny_images")
    cli = run_cli("fit", config, root, out, "--trainer.max_epochs", "6", "--test_after_fit", "true")
    assert cli.model.hparams.visual_encoder == "timm"
    report = written_test_metrics(out)
    # chance SumR on a 20-item gallery with one positive per query is about 2 x (5 + 25 + 50) = 160
    assert report["test/sumr"] > 220
