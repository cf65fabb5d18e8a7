"""Caption policies and the tokenizer's lower-casing option (ccr_methods §1.5)."""

from __future__ import annotations

import pytest

from leccr_lightning.data.text import load_or_train_tokenizer, normalize_caption


def test_nrccr_policy_cleans_the_english_source_and_queries_and_keeps_the_rest_raw() -> None:
    english = "Two young, White males are outside near many bushes"
    cleaned = "Two young white males are outside near many bushes."
    assert normalize_caption(english, "nrccr", "source") == cleaned
    assert normalize_caption(english, "nrccr", "translated") == cleaned
    # LiJiaBei-7/nrccr:util/tag_data_provider_vid.py:267-276: the MT and its back-translation go in raw
    for role in ("target", "back", "query"):
        assert normalize_caption(f"  {english}, Äpfel!  ", "nrccr", role) == f"{english}, Äpfel!"
    # the image provider (tag_data_provider_img.py:394) tokenises the xx2enc queries raw
    assert normalize_caption(english, "nrccr_image", "source") == cleaned
    assert normalize_caption(english, "nrccr_image", "translated") == english


def _cased_bert(path) -> str:
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Über", "über", "uber", "Apfel", "apfel", "##n"]
    BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=False).save_pretrained(path)
    return str(path)


def test_lowercase_is_berts_do_lower_case_on_a_pretrained_tokenizer(tmp_path) -> None:
    spec = _cased_bert(tmp_path / "cased")
    cased = load_or_train_tokenizer(spec, [], tmp_path / "cache")
    lowered = load_or_train_tokenizer(spec, [], tmp_path / "cache", lowercase=True)
    assert cased.tokenize("Über Apfel") == ["Über", "Apfel"]
    assert lowered.tokenize("Über Apfel") == ["uber", "apfel"]  # lower-cased and accent-stripped, as NRCCR loads mBERT


def test_lowercase_on_a_trained_tokenizer_builds_its_vocabulary_the_same_way(tmp_path) -> None:
    corpus = ["Über den Fluss", "über die Brücke", "ein Apfel"] * 3
    default = load_or_train_tokenizer("train", corpus, tmp_path / "cache", vocab_size=200)
    lowered = load_or_train_tokenizer("train", corpus, tmp_path / "cache", vocab_size=200, lowercase=True)
    assert default.tokenize("Über Brücke") == ["über", "brücke"]  # the default lower-cases and keeps accents
    assert lowered.tokenize("Über Brücke") == ["uber", "brucke"]  # whole words: the vocabulary was stripped too
    assert "[UNK]" not in lowered.tokenize("Brücke über Apfel")
    cased = load_or_train_tokenizer("train", corpus, tmp_path / "cache", vocab_size=200, lowercase=False)
    assert cased.tokenize("Über") == ["Über"]
    with pytest.raises(OSError, match="tokenizer"):
        load_or_train_tokenizer(str(tmp_path / "missing"), [], tmp_path / "cache", lowercase=True)
