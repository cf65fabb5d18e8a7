"""The semi-real collection: real Multi30K text in the synthetic layout, visual features tied to the English words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leccr_lightning.data.features import open_feature_store
from leccr_lightning.data.semireal import SemiRealConfig, english_content_words, word_vector, write_semireal_collection
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list


@pytest.fixture(scope="module")
def collection(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("semireal")
    config = SemiRealConfig(n_train=40, n_val=10, n_test=10, mt_noise=0.5, seed=3)
    return write_semireal_collection(shared_data / "multi30k", out, config), config


def test_layout_ids_and_real_text(collection, shared_data) -> None:
    folder, config = collection
    text = folder / "TextData"
    source = read_caption_file(text / "synthtrain_enc.caption.txt", "enc")
    target = read_caption_file(text / "synthtrain_google_enc2de.caption.txt", "enc2de")
    back = read_caption_file(text / "synthtrain_google_enc2de2enc.caption.txt", "enc2de2enc")
    queries = read_caption_file(text / "synthtest_de.caption.txt", "de")
    translated = read_caption_file(text / "synthtest_google_de2enc.caption.txt", "de2enc")
    train_ids = read_id_list(folder / "FeatureData" / "train_id.txt")
    assert len(train_ids) == len(source) == len(target) == len(back) == config.n_train
    assert len(queries) == len(translated) == config.n_test
    assert [c.split("#")[0] for c in source.ids] == train_ids
    real_english = set((shared_data / "multi30k" / "task1" / "image_splits" / "train.txt").read_text().split())
    assert {f"{i}.jpg" for i in train_ids} <= real_english
    # the human test queries are the task-1 German lines, untouched
    import gzip

    with gzip.open(shared_data / "multi30k" / "task1" / "raw" / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        german = {line.strip() for line in f}
    assert set(queries.texts) <= german
    manifest = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))
    noisy = set(manifest["noisy_translations"])
    assert 0.2 < len(noisy) / config.n_train < 0.8 and noisy <= set(target.ids)
    store = open_feature_store("bigfile", folder / "FeatureData" / "synthetic_feat")
    assert store.dim == config.feature_dim


def test_features_follow_the_english_content_words(collection) -> None:
    folder, config = collection
    store = open_feature_store("bigfile", folder / "FeatureData" / "synthetic_feat")
    test_ids = read_id_list(folder / "FeatureData" / "test_id.txt")
    english = read_caption_file(folder / "TextData" / "synthtest_google_de2enc.caption.txt", "de2enc")
    hits = 0
    for cap_id, caption in zip(english.ids, english.texts, strict=True):
        words = english_content_words(caption)
        query = np.mean([word_vector(w, config.feature_dim, config.seed) for w in words], axis=0)
        scores = [float(query @ store.gather_rows(store.rows_of(v))[0]) for v in test_ids]
        hits += int(test_ids[int(np.argmax(scores))] == cap_id.split("#")[0])
    # a bag of the query's English words finds its image far above chance (1 / 10)
    assert hits >= 7
    assert np.allclose(word_vector("dog", 8, 0), word_vector("dog", 8, 0))
    assert english_content_words("A dog and the Cat, running.") == ["dog", "cat", "running"]


def test_bad_sizes_are_clear_errors(shared_data, tmp_path) -> None:
    with pytest.raises(ValueError, match="n_val"):
        write_semireal_collection(shared_data / "multi30k", tmp_path, SemiRealConfig(n_val=5000))
    with pytest.raises(FileNotFoundError, match="Multi30K"):
        write_semireal_collection(tmp_path / "nowhere", tmp_path, SemiRealConfig())
