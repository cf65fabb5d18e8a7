"""``leccr tags`` end to end: the official tag files mined from a caption file (counts > 1, > 0 for ``tgif`` ids,
lemmatised nouns / verbs / adjectives without stop words, vocabulary by summed count), the caption-file rule, and
that the DataModule's targets read what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leccr_lightning.cli import main
from leccr_lightning.data.video.tags import ConceptTags, caption_concepts, lexicon_lemma

CAPTIONS = """video0#0 A man is playing a guitar.
video0#1 a man plays the guitar
video0#2 Men playing guitars on a stage
video1#0 a dog runs
video1#1 dogs are running in 2 parks
tgif9#0 a cat sleeping
"""


def collection(tmp_path: Path, name: str = "coll") -> Path:
    folder = tmp_path / name / "TextData"
    folder.mkdir(parents=True)
    (folder / f"{name}train.caption.txt").write_text(CAPTIONS, encoding="utf-8")
    return tmp_path / name


def test_lexicon_lemmas_keep_nouns_verbs_and_adjectives():
    assert [lexicon_lemma(w) for w in ("playing", "men", "guitars", "shown", "red", "zorblax")] == [
        "play",
        "man",
        "guitar",
        "show",
        "red",
        "zorblax",  # out of the lexicon: a noun, as the tagger's default for unknown words
    ]
    assert lexicon_lemma("2") is None and lexicon_lemma("quickly") is None
    assert caption_concepts("A woman is cooking the pasta") == ["woman", "cook", "pasta"]
    assert caption_concepts("A woman is cooking the pasta", pos_filter="none") == ["woman", "cooking", "pasta"]


def test_leccr_tags_writes_the_official_files(tmp_path):
    folder = collection(tmp_path)
    main(["tags", "--root", str(tmp_path), "--collection", "coll", "--vocabulary_size", "5"])
    lines = (folder / "TextData/tags/video_label_th_1.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["video0\tman:3 play:3 guitar:3 ", "video1\tdog:2 run:2 ", "tgif9\tcat:1 sleep:1 "]
    vocab_dir = folder / "TextData/tags/video_label_th_1"
    assert json.loads((vocab_dir / "tag_vocab_5.json").read_text()) == ["man", "play", "guitar", "dog", "run"]
    assert (vocab_dir / "tag_vocab_5.txt").read_text().splitlines() == ["man", "play", "guitar", "dog", "run"]
    assert (vocab_dir / "all_words.txt").read_text().splitlines()[-2:] == ["cat 1", "sleep 1"]
    tags = ConceptTags(vocabulary="TextData/tags/video_label_th_1/tag_vocab_5.json")
    bound = tags.bind(folder, "train", ["video0", "video1", "tgif9"], folder / "TextData/colltrain.caption.txt")
    np.testing.assert_array_equal(
        bound.batch(np.arange(3))["values"].numpy(), [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    )


def test_leccr_tags_prefers_the_whole_collection_file_and_keeps_existing_files(tmp_path, capsys):
    folder = collection(tmp_path)
    (folder / "TextData/coll.caption.txt").write_text(CAPTIONS + "video2#0 a bird\nvideo2#1 a bird\n")
    main(["tags", "--root", str(tmp_path), "--collection", "coll"])
    tag_file = folder / "TextData/tags/video_label_th_1.txt"
    assert tag_file.read_text().splitlines()[-1] == "video2\tbird:2 "
    tag_file.write_text("kept\n")
    main(["tags", "--root", str(tmp_path), "--collection", "coll"])
    assert tag_file.read_text() == "kept\n" and "kept (pass --overwrite true" in capsys.readouterr().out
    main(
        [
            "tags",
            "--root",
            str(tmp_path),
            "--collection",
            "coll",
            "--overwrite",
            "true",
            "--captions",
            "colltrain.caption.txt",
        ]
    )
    assert tag_file.read_text().splitlines()[-1] == "tgif9\tcat:1 sleep:1 "


def test_leccr_tags_refuses_an_unknown_part_of_speech_filter(tmp_path):
    collection(tmp_path)
    with pytest.raises(SystemExit):
        main(["tags", "--root", str(tmp_path), "--collection", "coll", "--pos_filter", "spacy"])


def test_leccr_synth_writes_a_video_collection_whose_tags_leccr_tags_reproduces(tmp_path):
    main(["synth", "--out", str(tmp_path), "--layout", "tgif_li", "--n_train", "20", "--n_val", "5", "--n_test", "5"])
    folder = tmp_path / "tgif_li"
    tag_dir = folder / "TextData/tags"
    written = {p.relative_to(tag_dir): p.read_bytes() for p in sorted(tag_dir.rglob("*")) if p.is_file()}
    assert (folder / "FeatureData/resnext-101_resnet152-13k/video2frames.txt").is_file()
    assert (tmp_path / "bert_extract/tgif_li_cap_feat.hdf5").is_file()
    main(["tags", "--root", str(tmp_path), "--collection", "tgif_li", "--overwrite", "true"])
    assert {p.relative_to(tag_dir): p.read_bytes() for p in sorted(tag_dir.rglob("*")) if p.is_file()} == written
