"""Video extras: region shards (folder and HDF5, masks, frame caps), cached frame tokens, decoded frames, the regions
feature store, paragraphs, the synthetic writers (``leccr synth``), and the errors for bad shards and frameless
videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.data.datamodule import CCRDataModule, FeatureSpec
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.video.frames import CLIP_MEAN, CLIP_STD, FrameTokens, VideoFrames, write_frame_images
from leccr_lightning.data.video.paragraphs import write_paragraph_captions
from leccr_lightning.data.video.regions import (
    RegionFeatures,
    RegionShards,
    uniform_frame_indices,
    write_region_hdf5,
    write_region_shards,
)
from leccr_lightning.data.video.synthetic import FRAME_TOKENS_DIR, FRAMES_DIR, REGIONS_DIR
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list, write_caption_file
from tests.helpers import tiny_datamodule_kwargs

SOURCE = Path("train_id.txt")


@pytest.fixture(scope="module")
def video_collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video_extras")
    write_synthetic_collection(
        root,
        SynthConfig(
            video=True,
            n_train=12,
            n_val=4,
            n_test=4,
            regions=True,
            frame_tokens=True,
            frame_images=True,
            image_size=16,
            seed=2,
        ),
    )
    return root


def random_shards(count: int, frames=(1, 4), regions: int = 3, dim: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    shards, masks = {}, {}
    for i in range(count):
        shard = rng.normal(size=(int(rng.integers(frames[0], frames[1] + 1)), regions, dim)).astype(np.float16)
        masks[f"v{i}"] = rng.random(shard.shape[:2]) < 0.7
        shard[~masks[f"v{i}"]] = 0
        shards[f"v{i}"] = shard
    return shards, masks


def test_uniform_frame_indices_keep_the_ends_and_never_repeat():
    assert uniform_frame_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    assert uniform_frame_indices(3, 12).tolist() == [0, 1, 2]
    picks = uniform_frame_indices(40, 12)
    assert len(picks) == 12 and picks[0] == 0 and picks[-1] == 39 and (np.diff(picks) > 0).all()


@pytest.mark.parametrize("store", ["folder", "hdf5"])
def test_region_shards_pad_frames_and_mask_absent_regions(tmp_path, store):
    shards, masks = random_shards(4)
    if store == "folder":
        path = write_region_shards(tmp_path / "regions", shards, masks)
    else:
        path = write_region_hdf5(tmp_path / "regions.h5", shards, masks)
    ids = list(shards)
    bound = RegionFeatures(str(path)).bind(tmp_path, "train", ids, SOURCE)
    out = bound.batch(np.array([3, 0, 1]))
    longest = max(len(shards[ids[r]]) for r in (3, 0, 1))
    assert out["values"].shape == (3, longest, 3, 5) and out["values"].dtype == torch.float32
    for i, row in enumerate((3, 0, 1)):
        frames = len(shards[ids[row]])
        assert torch.equal(out["values"][i, :frames], torch.from_numpy(shards[ids[row]].astype(np.float32)))
        assert torch.equal(out["mask"][i, :frames], torch.from_numpy(masks[ids[row]]))
        assert out["frame_mask"][i].tolist() == [True] * frames + [False] * (longest - frames)
        assert not out["mask"][i, frames:].any() and not out["values"][i, frames:].any()


def test_region_frames_are_capped_by_uniform_sampling(tmp_path):
    shard = np.arange(10 * 2 * 1, dtype=np.float16).reshape(10, 2, 1)
    write_region_shards(tmp_path / "r", {"v": shard})
    out = RegionFeatures(str(tmp_path / "r"), max_frames=4).bind(tmp_path, "val", ["v"], SOURCE).batch(np.array([0]))
    picks = uniform_frame_indices(10, 4)
    assert torch.equal(out["values"][0], torch.from_numpy(shard[picks].astype(np.float32)))
    assert out["mask"].all()


def test_bad_region_shards_are_refused_naming_the_file_and_the_id(tmp_path):
    good = np.zeros((2, 3, 5), dtype=np.float16)
    cases = {
        "regions": (np.zeros((2, 4, 5), np.float16), None, r"v1\.npy: id v1: .*expected \[frames, 3, 5\]"),
        "flat": (np.zeros((6, 5), np.float16), None, r"v1\.npy: id v1: .*expected floating \[frames, regions, D\]"),
        "frameless": (np.zeros((0, 3, 5), np.float16), None, r"v1\.npy: id v1: the video has no frames"),
        "mask": (good, np.ones((2, 2), bool), r"v1\.npy: id v1: region mask of shape \(2, 2\)"),
    }
    for name, (bad, mask, message) in cases.items():
        folder = write_region_shards(tmp_path / name, {"v0": good, "v1": bad}, None if mask is None else {"v1": mask})
        with pytest.raises(DataFormatError, match=message):
            RegionFeatures(str(folder)).bind(tmp_path, "train", ["v0", "v1"], SOURCE)
    with pytest.raises(DataFormatError, match=r"id v9: no region features for video v9 \(from train_id.txt\)"):
        RegionFeatures(str(tmp_path / "regions")).bind(tmp_path, "train", ["v0", "v9"], SOURCE)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RegionShards(tmp_path / "nowhere")


def test_frame_tokens_from_a_folder_or_an_array_sample_frames(tmp_path):
    rng = np.random.default_rng(0)
    tokens = {f"v{i}": rng.normal(size=(3 + 5 * i, 4)).astype(np.float16) for i in range(3)}
    for name, array in tokens.items():
        (tmp_path / "tokens").mkdir(exist_ok=True)
        np.save(tmp_path / "tokens" / f"{name}.npy", array)
    out = FrameTokens("tokens", num_frames=6).bind(tmp_path, "train", list(tokens), SOURCE).batch(np.array([2, 0]))
    assert out["values"].shape == (2, 6, 4) and out["mask"].tolist() == [[True] * 6, [True] * 3 + [False] * 3]
    picks = uniform_frame_indices(13, 6)
    assert torch.equal(out["values"][0], torch.from_numpy(tokens["v2"][picks].astype(np.float32)))
    stacked = np.stack([rng.normal(size=(5, 4)) for _ in range(3)]).astype(np.float16)
    np.save(tmp_path / "stacked.npy", stacked)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    out = FrameTokens("stacked.npy", ids="ids.txt", num_frames=None).bind(tmp_path, "test", ["c", "a"], SOURCE)
    assert torch.equal(out.batch(np.array([0]))["values"][0], torch.from_numpy(stacked[2].astype(np.float32)))


def test_bad_frame_tokens_are_refused_naming_the_file_and_the_id(tmp_path):
    folder = tmp_path / "tokens"
    folder.mkdir()
    np.save(folder / "v0.npy", np.zeros((3, 4), np.float16))
    np.save(folder / "v1.npy", np.zeros((0, 4), np.float16))
    with pytest.raises(DataFormatError, match=r"v1\.npy: id v1: frame tokens of shape \(0, 4\)"):
        FrameTokens(str(folder)).bind(tmp_path, "train", ["v0", "v1"], SOURCE)
    np.save(folder / "v1.npy", np.zeros((3, 8), np.float16))
    with pytest.raises(DataFormatError, match=r"v1\.npy: id v1: .*expected \[frames, 4\]"):
        FrameTokens(str(folder)).bind(tmp_path, "train", ["v0", "v1"], SOURCE)
    with pytest.raises(DataFormatError, match=r"v2\.npy: id v2: no cached frame tokens"):
        FrameTokens(str(folder)).bind(tmp_path, "train", ["v0", "v2"], SOURCE)


def test_video_frames_are_decoded_with_clip_preprocessing(tmp_path):
    pictures = {"v0": [np.full((20, 30, 3), 0.5)] * 5, "v1": [np.zeros((20, 20, 3))] * 2}
    write_frame_images(tmp_path / "frames", pictures)
    out = VideoFrames("frames", num_frames=3, image_size=16).bind(tmp_path, "train", ["v0", "v1"], SOURCE)
    batch = out.batch(np.array([0, 1]))
    assert batch["values"].shape == (2, 3, 3, 16, 16) and batch["mask"].tolist() == [[True] * 3, [True, True, False]]
    expected = (round(0.5 * 255) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(batch["values"][0, 0, :, 8, 8], expected, atol=1e-5)
    assert torch.allclose(batch["values"][1, 0, :, 0, 0], -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD), atol=1e-5)


def test_a_video_without_frames_is_refused_naming_its_folder(tmp_path):
    write_frame_images(tmp_path / "frames", {"v0": [np.zeros((8, 8, 3))]})
    (tmp_path / "frames" / "v1").mkdir()
    with pytest.raises(DataFormatError, match=r"frames/v1: id v1: the video has no frames"):
        VideoFrames("frames").bind(tmp_path, "train", ["v0", "v1"], SOURCE)
    with pytest.raises(DataFormatError, match=r"frames/v2: id v2: no frame folder for video v2"):
        VideoFrames("frames").bind(tmp_path, "train", ["v0", "v2"], SOURCE)
    (tmp_path / "frames" / "v1" / "0000.png").write_bytes(b"not a png")
    bound = VideoFrames("frames").bind(tmp_path, "train", ["v1"], SOURCE)
    with pytest.raises(DataFormatError, match=r"0000\.png: id v1: not a readable frame image"):
        bound.batch(np.array([0]))


def test_synthetic_writer_puts_every_extra_of_every_video_on_disk(video_collection):
    folder = video_collection / "synthetic"
    ids = [v for s in ("train", "val", "test") for v in read_id_list(folder / f"FeatureData/{s}_id.txt")]
    shards = RegionShards(folder / REGIONS_DIR)
    shards.check(ids, SOURCE)
    assert shards.probe() == (6, 32)
    masked = [v for v in ids if (folder / REGIONS_DIR / f"{v}.mask.npy").is_file()]
    assert masked, "some regions are absent"
    features, mask = shards.open(masked[0])
    assert not np.asarray(features)[~np.asarray(mask)].any()
    assert all(np.load(folder / FRAME_TOKENS_DIR / f"{v}.npy").shape[1] == 32 for v in ids)
    for v in ids:
        frames = len(list((folder / FRAMES_DIR / v).glob("*.png")))
        assert frames == shards.open(v)[0].shape[0] == np.load(folder / FRAME_TOKENS_DIR / f"{v}.npy").shape[0]
        assert 4 <= frames <= 8


def test_video_extras_do_not_change_the_rest_of_the_collection(tmp_path):
    plain = write_synthetic_collection(tmp_path / "a", SynthConfig(video=True, n_train=6, n_val=2, n_test=2))
    rich = write_synthetic_collection(
        tmp_path / "b", SynthConfig(video=True, n_train=6, n_val=2, n_test=2, regions=True, frame_tokens=True)
    )
    for name in ("FeatureData/synthetic_feat/feature.bin", "TextData/synthtrain_enc.caption.txt"):
        assert (plain / name).read_bytes() == (rich / name).read_bytes()


def test_datamodule_serves_region_extras_and_regions_as_visual_features(video_collection):
    kwargs = tiny_datamodule_kwargs(
        video_collection,
        features=FeatureSpec(kind="regions", path=REGIONS_DIR),
        extras={"regions": RegionFeatures(REGIONS_DIR), "tokens": FrameTokens(FRAME_TOKENS_DIR, num_frames=5)},
        batch_size=4,
    )
    data = CCRDataModule(**kwargs)
    assert data.visual_dim == 32
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    regions = batch["extras"]["regions"]
    frames = regions["values"].shape[1]
    assert batch["visual"].shape == (4, frames * 6, 32)
    assert torch.equal(batch["visual"], regions["values"].flatten(1, 2))
    assert torch.equal(batch["visual_mask"], regions["mask"].flatten(1, 2))
    assert batch["extras"]["tokens"]["values"].shape == (4, 5, 32)


def test_synth_cli_writes_the_video_extras(tmp_path):
    from leccr_lightning.tools.synth import synth_main

    argv = ["--out", str(tmp_path), "--video", "true", "--n_train", "4", "--n_val", "2", "--n_test", "2"]
    folder = Path(synth_main([*argv, "--regions", "true", "--regions_per_frame", "5", "--frame_tokens", "true"]))
    assert RegionShards(folder / REGIONS_DIR).probe() == (5, 32)
    assert len(list((folder / FRAME_TOKENS_DIR).glob("*.npy"))) == 8
    with pytest.raises(ValueError, match="regions_per_frame must be at least 4"):
        synth_main([*argv, "--regions", "true", "--regions_per_frame", "2"])


def test_paragraphs_concatenate_a_videos_captions_in_line_order(tmp_path):
    write_caption_file(
        tmp_path / "in.txt", [("v1#enc#0", "a dog runs"), ("v2#enc#0", "a cat"), ("v1#enc#1", "it jumps")]
    )
    captions = read_caption_file(write_paragraph_captions(tmp_path / "in.txt", tmp_path / "out.txt"))
    assert captions.as_dict() == {"v1#enc#0": "a dog runs it jumps", "v2#enc#0": "a cat"}
