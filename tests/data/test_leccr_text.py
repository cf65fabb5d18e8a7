"""The data settings of the LECCR recipes (configs/fragments/leccr.yaml): the ``leccr`` text policy in the DataModule
(captions through ``pre_caption``, descriptions raw, an emptied caption an error naming its file and id), per-split
lengths (training untruncated, evaluation cut at 200), every video frame, and the last partial batch dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leccr_lightning.data.datamodule import CCRDataModule, FeatureSpec
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.text import leccr_pre_caption
from tests.helpers import tiny_datamodule_kwargs

LONG_DESCRIPTION = " ".join(f"Word{i}, and (more)!" for i in range(60))


@pytest.fixture
def root(tmp_path) -> Path:
    folder = write_synthetic_collection(tmp_path, SynthConfig(n_train=12, n_val=4, n_test=4))
    for split in ("train", "test"):
        first = (folder / "FeatureData" / f"{split}_id.txt").read_text().split()[0]
        (folder / "descriptions" / f"{first}.txt").write_text(LONG_DESCRIPTION + "\n")
    return tmp_path


def leccr_data(root: Path, **overrides) -> CCRDataModule:
    args = dict(roles=["source", "target", "description"], normalization="leccr", max_length=dict(train=None, eval=40))
    return CCRDataModule(**tiny_datamodule_kwargs(root, **{**args, **overrides}))


def lengths(texts) -> np.ndarray:
    return np.diff(texts.offsets)


def test_captions_follow_pre_caption_and_descriptions_stay_raw(root):
    dm = leccr_data(root)
    train = dm.split("train")["train"]
    source = dm._train_files["source"]
    first = train.texts["source"].batch([0])["input_ids"][0].tolist()
    assert dm.tokenizer.decode(first, skip_special_tokens=True) == leccr_pre_caption(source.texts[0])
    # the long description is tokenised as written (pre_caption would drop its punctuation and keep 30 words)
    longest = int(lengths(train.texts["description"]).max())
    assert longest == len(dm.tokenizer(LONG_DESCRIPTION)["input_ids"])
    assert longest > len(dm.tokenizer(leccr_pre_caption(LONG_DESCRIPTION))["input_ids"])


def test_training_texts_are_not_truncated_and_evaluation_texts_are(root):
    dm = leccr_data(root)
    train_descriptions = lengths(dm.split("train")["train"].texts["description"])
    test_descriptions = lengths(dm.split("test")["gallery"].texts["description"])
    assert train_descriptions.max() > 100
    assert test_descriptions.max() == 40
    capped = leccr_data(root, max_length=64)
    assert lengths(capped.split("train")["train"].texts["description"]).max() == 64
    with pytest.raises(ValueError, match="max_length"):
        leccr_data(root, max_length={"train": None, "test": 200})


def test_an_untruncated_text_longer_than_the_tokenizer_names_its_file_and_id(root):
    dm = leccr_data(root)
    dm.tokenizer.model_max_length = 60
    first = (root / "synthetic" / "FeatureData" / "train_id.txt").read_text().split()[0]
    with pytest.raises(DataFormatError, match=rf"{first}\.txt: id {first}: .*model_max_length 60"):
        dm.split("train")


def test_a_caption_the_policy_empties_is_an_error_naming_file_and_id(root):
    captions = root / "synthetic" / "TextData" / "synthtrain_google_enc2de.caption.txt"
    lines = captions.read_text(encoding="utf-8").splitlines()
    cap_id = lines[3].split(" ", 1)[0]
    lines[3] = f"{cap_id} ?!..."
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"synthtrain_google_enc2de\.caption\.txt: id {cap_id}: .*no text"):
        leccr_data(root)


def test_every_frame_is_read_without_a_cap_and_the_last_batch_is_dropped(tmp_path):
    write_synthetic_collection(tmp_path, SynthConfig(video=True, frames=(70, 72), n_train=10, n_val=3, n_test=3))
    features = FeatureSpec(
        path="FeatureData/synthetic_feat", video2frames="FeatureData/synthetic_feat/video2frames.txt"
    )
    frames = {}
    for cap in (None, 64):
        dm = leccr_data(tmp_path, features=features, max_frames=cap, batch_size=4, drop_last=True)
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        frames[cap] = max(int(b["visual_mask"].sum(1).max()) for b in batches)
        assert all(b["visual_index"].shape[0] == 4 for b in batches)
        assert len(batches) == len(dm.split("train")["train"]) // 4
    assert frames[None] >= 70 and frames[64] == 64
