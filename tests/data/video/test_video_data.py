"""The Dual Encoding video collections: caption files, the rebuilt vocabulary (and its check against a released
pickle read with a restricted unpickler), BoW / RNN ids, word2vec rows, concept-tag targets, BERT caption features,
the DataModule's batches and the errors for bad input (file and line or id named)."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from leccr_lightning.data.datamodule import FeatureSpec
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import write_bigfile
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.video.captions import read_video_captions
from leccr_lightning.data.video.datamodule import VideoTextDataModule
from leccr_lightning.data.video.sentences import HDF5SentenceFeatures
from leccr_lightning.data.video.tags import ConceptTags, read_tag_file
from leccr_lightning.data.video.vocabulary import (
    RNN_SPECIALS,
    DualEncodingTexts,
    TextVocabulary,
    build_word_list,
    clean_words,
    read_released_vocabulary,
    word2vec_rows,
)

COLLECTION = "synthvideo"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video")
    config = SynthConfig(layout="synthvideo", n_train=40, n_val=8, n_test=8, captions_per_item=(3, 5), seed=1)
    write_synthetic_collection(root, config)
    return root


def datamodule(root: Path, **overrides) -> VideoTextDataModule:
    feature = "FeatureData/synthetic_frames"
    arguments = dict(
        root=str(root),
        collection=COLLECTION,
        train_captions="synthvideotrain.caption.txt",
        val_captions="synthvideoval.caption.txt",
        test_captions="synthvideotest.caption.txt",
        features=FeatureSpec(path=feature, video2frames=f"{feature}/video2frames.txt"),
        extras={
            "tags": ConceptTags(),
            "bert": HDF5SentenceFeatures("../bert_extract/{collection}_cap_feat.hdf5", dim=1024),
        },
        word2vec="word2vec/flickr/vec500flickr30m",
        batch_size=8,
        eval_batch_size=8,
    )
    return VideoTextDataModule(**(arguments | overrides))


def copy_collection(root: Path, target: Path) -> Path:
    """A writable copy of the synthetic collection folder (and the root-level word2vec / BERT files)."""
    import shutil

    shutil.copytree(root, target)
    return target


# --- captions and vocabulary -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "problem"),
    [("no_id_here a caption", "no caption id"), ("video1#0 ", "empty text"), ("video0#0 again", "repeats line 1")],
)
def test_caption_reader_names_the_file_and_line_of_a_bad_caption(tmp_path, line, problem):
    path = tmp_path / "bad.caption.txt"
    path.write_text(f"video0#0 a man is cooking\n{line}\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"bad\.caption\.txt: line 2: .*{problem}"):
        read_video_captions(path)


def test_caption_ids_give_the_video_without_suffix_and_the_index(tmp_path):
    path = tmp_path / "ok.caption.txt"
    path.write_text("video7#enc#3 a dog\nclip.mp4#0 a cat\n", encoding="utf-8")
    parsed = read_video_captions(path).parsed
    assert [(p.visual_id, p.index) for p in parsed] == [("video7", "3"), ("clip", "0")]


def test_vocabulary_counts_cleaned_words_in_order_of_first_appearance():
    captions = ["A dog, a DOG!", "the dog-walker's dog", "a cat", "Cat and a dog"]
    assert clean_words("the dog-walker's dog") == ["the", "dog", "walker", "s", "dog"]
    assert build_word_list(captions, threshold=2) == ["a", "dog", "cat"]
    assert build_word_list(captions, threshold=5) == ["dog"]


def test_rnn_ids_wrap_captions_and_bags_of_words_count_raw_in_vocabulary_words():
    vocabulary = TextVocabulary(["a", "dog", "cat"])
    assert vocabulary.rnn_tokens[:4] == list(RNN_SPECIALS)
    assert vocabulary.rnn_ids("A dog chases a cat") == [1, 4, 5, 3, 4, 6, 2]  # <start> a dog <unk> a cat <end>
    texts = DualEncodingTexts(vocabulary, ["A dog chases a cat", "dog"])
    batch = texts.batch([1, 0])
    assert batch["input_ids"].tolist() == [[1, 5, 2, 0, 0, 0, 0], [1, 4, 5, 3, 4, 6, 2]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 7]
    assert batch["bow"].tolist() == [[0.0, 1.0, 0.0], [2.0, 1.0, 1.0]]


class _OfficialVocabulary:
    """The attribute layout of the official ``util.vocab.Vocabulary`` (word2idx, idx2word, idx, text_style)."""

    def __init__(self, text_style: str, tokens: list[str]):
        self.word2idx = {t: i for i, t in enumerate(tokens)}
        self.idx2word = dict(enumerate(tokens))
        self.idx = len(tokens)
        self.text_style = text_style


def released_pickle(monkeypatch, path: Path, text_style: str, tokens: list[str], protocol: int) -> Path:
    """Pickle a vocabulary as the official ``util.vocab`` module would (module ``util.vocab``, class Vocabulary)."""
    package, module = types.ModuleType("util"), types.ModuleType("util.vocab")
    _OfficialVocabulary.__module__, _OfficialVocabulary.__qualname__ = "util.vocab", "Vocabulary"
    module.Vocabulary = _OfficialVocabulary
    monkeypatch.setitem(sys.modules, "util", package)
    monkeypatch.setitem(sys.modules, "util.vocab", module)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_OfficialVocabulary(text_style, tokens), protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_rebuilt_vocabulary_equals_the_released_pickle(root, tmp_path, monkeypatch, protocol):
    data = datamodule(root)
    words = data.vocabulary.words
    bow = released_pickle(monkeypatch, tmp_path / "bow" / "word_vocab_5.pkl", "bow", words, protocol)
    rnn = released_pickle(monkeypatch, tmp_path / "rnn" / "word_vocab_5.pkl", "rnn", [*RNN_SPECIALS, *words], protocol)
    monkeypatch.delitem(sys.modules, "util.vocab")  # the reader needs no official module
    assert read_released_vocabulary(bow) == words
    assert read_released_vocabulary(rnn) == data.vocabulary.rnn_tokens
    for path in (bow, rnn):
        assert datamodule(root, released_vocabulary=str(path)).vocabulary.words == words
    shuffled = released_pickle(monkeypatch, tmp_path / "other.pkl", "bow", words[::-1], protocol)
    with pytest.raises(DataFormatError, match=r"other\.pkl: .*first difference at index 0"):
        _ = datamodule(root, released_vocabulary=str(shuffled)).vocabulary


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_the_vocabulary_unpickler_refuses_any_other_global(tmp_path):
    path = tmp_path / "word_vocab_5.pkl"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(DataFormatError, match=r"word_vocab_5\.pkl: .*refusing to load (posix|os)\.system"):
        read_released_vocabulary(path)


def test_word2vec_rows_copy_known_words_and_draw_the_others_from_the_seed(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_bigfile(tmp_path / "w2v", ["dog", "cat", "tree"], vectors)
    rows = word2vec_rows(["<pad>", "cat", "dog", "zebra"], tmp_path / "w2v", seed=3)
    np.testing.assert_array_equal(rows[1], vectors[1])
    np.testing.assert_array_equal(rows[2], vectors[0])
    assert np.all(np.abs(rows[[0, 3]]) <= 1.0)
    np.testing.assert_array_equal(rows, word2vec_rows(["<pad>", "cat", "dog", "zebra"], tmp_path / "w2v", seed=3))
    assert not np.array_equal(rows[0], word2vec_rows(["<pad>"], tmp_path / "w2v", seed=4)[0])


# --- the DataModule ----------------------------------------------------------------------------------------------
def test_training_batches_carry_rnn_ids_bags_of_words_tags_and_sentence_features(root):
    data = datamodule(root)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    tokens = batch["text"]["source"]
    assert tokens["input_ids"][:, 0].eq(1).all() and tokens["bow"].shape == (8, data.vocab_size - 4)
    lengths = tokens["attention_mask"].sum(1)
    assert tokens["input_ids"][torch.arange(8), lengths - 1].eq(2).all()  # <end>
    tags = batch["extras"]["tags"]["values"]
    vocabulary = json.loads((root / COLLECTION / "TextData/tags/video_label_th_1/tag_vocab_512.json").read_text())
    assert tags.shape == (8, len(vocabulary)) and float(tags.min()) >= 0.0 and float(tags.max()) <= 1.0
    with h5py.File(root / "bert_extract" / f"{COLLECTION}_cap_feat.hdf5") as handle:
        expected = np.stack([handle[cap_id][...] for cap_id in batch["caption_ids"]])
    np.testing.assert_array_equal(batch["extras"]["bert"]["values"].numpy(), expected)
    np.testing.assert_array_equal(
        data.word_embeddings[4:],
        word2vec_rows(data.vocabulary.rnn_tokens, root / "word2vec/flickr/vec500flickr30m")[4:],
    )


def test_the_gallery_is_the_videos_of_the_caption_file_in_order_of_first_appearance(root):
    data = datamodule(root)
    split = data.split("test")
    captions = read_video_captions(root / COLLECTION / "TextData" / "synthvideotest.caption.txt")
    assert split["gallery"].items.ids == list(dict.fromkeys(p.visual_id for p in captions.parsed))
    queries = next(iter(data.test_dataloader()[0]))
    assert queries["caption_ids"] == list(captions.ids[:8]) and "bow" in queries["text"]["query"]


def test_long_videos_keep_their_first_frames(root):
    data = datamodule(root, max_frames=2)
    gallery = data.split("val")["gallery"]
    batch = gallery.collate([0])
    first = gallery.items.store.rows_of(gallery.items.ids[0])
    assert batch["visual"].shape[1] == 2
    np.testing.assert_array_equal(batch["visual"][0].numpy(), gallery.items.store.gather_rows(first))


def test_tag_targets_divide_by_the_largest_count_listed_before_keeping_the_vocabulary(tmp_path):
    (tmp_path / "tags").mkdir()
    (tmp_path / "tags" / "t.txt").write_text("v1\tdog:4 ball:2 cat:1 \nv2\t\n", encoding="utf-8")
    (tmp_path / "tags" / "vocab.json").write_text(json.dumps(["ball", "cat"]))
    bound = ConceptTags("tags/t.txt", "tags/vocab.json").bind(tmp_path, "train", ["v1", "v2"], tmp_path / "c.txt")
    assert bound.batch(np.array([0, 1]))["values"].tolist() == [[0.5, 0.25], [0.0, 0.0]]


# --- bad input -----------------------------------------------------------------------------------------------------
def test_a_tag_line_for_an_unknown_video_is_refused_with_its_line(root, tmp_path):
    copy = copy_collection(root, tmp_path / "vs")
    tag_file = copy / COLLECTION / "TextData/tags/video_label_th_1.txt"
    lines = tag_file.read_text(encoding="utf-8").splitlines()
    tag_file.write_text("\n".join([*lines, "ghost42\tdog:3 "]) + "\n", encoding="utf-8")
    data = datamodule(copy)
    with pytest.raises(DataFormatError, match=rf"video_label_th_1\.txt: line {len(lines) + 1}: .*ghost42"):
        data.split("train")


def test_a_training_video_without_a_tag_line_is_refused_unless_allowed(root, tmp_path):
    copy = copy_collection(root, tmp_path / "vs")
    tag_file = copy / COLLECTION / "TextData/tags/video_label_th_1.txt"
    lines = tag_file.read_text(encoding="utf-8").splitlines()
    tag_file.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    missing = lines[0].split("\t")[0]
    with pytest.raises(DataFormatError, match=rf"video_label_th_1\.txt: id {missing}: no tag line"):
        datamodule(copy).split("train")
    extras = {"tags": ConceptTags(allow_missing=True)}
    tags = datamodule(copy, extras=extras).split("train")["train"].item_extras["tags"]
    assert float(tags.batch(np.array([0]))["values"].sum()) == 0.0


def test_a_malformed_tag_entry_names_its_line(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("v1\tdog:2 \nv2\tcat-3 \n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"tags\.txt: line 2: tag entry 'cat-3' of video v2"):
        read_tag_file(path)


def test_a_caption_whose_video_has_no_frames_is_refused_with_file_and_id(root, tmp_path):
    copy = copy_collection(root, tmp_path / "vs")
    caption_file = copy / COLLECTION / "TextData" / "synthvideoval.caption.txt"
    caption_file.write_text(caption_file.read_text(encoding="utf-8") + "vidzz999999#0 a dog\n", encoding="utf-8")
    with pytest.raises(KeyError, match=r"vidzz999999 \(from .*synthvideoval\.caption\.txt\) has no feature"):
        datamodule(copy).split("val")


def test_a_caption_without_a_sentence_feature_is_refused_with_file_and_id(root, tmp_path):
    copy = copy_collection(root, tmp_path / "vs")
    with h5py.File(copy / "bert_extract" / f"{COLLECTION}_cap_feat.hdf5", "a") as handle:
        first = sorted(k for k in handle if k.startswith("vidte"))[0]
        del handle[first]
    with pytest.raises(DataFormatError, match=rf"cap_feat\.hdf5: id {first}: no sentence feature"):
        datamodule(copy).split("test")
