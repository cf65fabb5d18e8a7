"""ROUGE-L relevance: hand-checked values, equality with pycocoevalcap on random and real Multi30K captions, and the
on-disk cache of ``RougeRelevance`` keyed by the caption files' content."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from pycocoevalcap.rouge.rouge import Rouge

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.precomp import write_precomp
from leccr_lightning.data.visualsearch import write_caption_file
from leccr_lightning.metrics import relevance as relevance_module
from leccr_lightning.metrics.relevance import RougeRelevance, rouge_relevance, rouge_tokens, save_relevance


def pycocoevalcap_relevance(texts: list[str], items: list[int], num_gallery: int, rows) -> np.ndarray:
    """``Rouge.calc_score`` of each caption in ``rows`` against every item's captions, fed our tokens joined by
    single spaces (its own tokenisation is ``str.split(" ")``); 0 for an item without captions."""
    scorer = Rouge()
    tokenised = [" ".join(rouge_tokens(text)) for text in texts]
    references = [[tokenised[c] for c in range(len(texts)) if items[c] == g] for g in range(num_gallery)]
    out = np.zeros((len(rows), num_gallery), dtype=np.float32)
    for i, q in enumerate(rows):
        for g, refs in enumerate(references):
            if refs:
                out[i, g] = scorer.calc_score([tokenised[q]], refs)
    return out


def test_hand_checked_rouge_l_values():
    texts = ["a b c d", "a c d e", "A B", "x y", "a", "c d"]
    relevance = rouge_relevance(texts, [0, 1, 2, 3, 3, 4], 6)
    # LCS("a b c d", "a c d e") = 3: P = R = 3/4, F = 3/4
    assert relevance[0, 1] == pytest.approx(0.75)
    # "a b" (lower-cased) against "a b c d": P = 1, R = 1/2, F = 2.44 * 0.5 / (0.5 + 1.44) with beta = 1.2
    assert relevance[2, 0] == pytest.approx(2.44 * 0.5 / 1.94)
    # P and R are maxed separately over the references "x y" and "a": P = max(0, 1/2), R = max(0, 1/1)
    assert relevance[2, 3] == pytest.approx(2.44 * 0.5 * 1.0 / (1.0 + 1.44 * 0.5))
    assert relevance[2, 4] == 0.0 and relevance[3, 0] == 0.0
    assert np.array_equal(np.diag(relevance[[0, 1, 2, 3, 5], :][:, [0, 1, 2, 3, 4]]), np.ones(5, dtype=np.float32))
    assert not relevance[:, 5].any(), "an item without captions has relevance 0"
    assert relevance.dtype == np.float32 and relevance.shape == (6, 6)


def test_rouge_relevance_rejects_bad_input():
    with pytest.raises(ValueError, match=r"query_to_gallery\[2\] = 2 is outside the gallery \[0, 2\)"):
        rouge_relevance(["a", "b", "c"], [0, 1, 2], 2)
    with pytest.raises(ValueError, match="one entry per query"):
        rouge_relevance(["a", "b"], [0], 2)
    with pytest.raises(ValueError, match="query caption 1 has no word"):
        rouge_relevance(["a", "  "], [0, 1], 2)


def test_equals_pycocoevalcap_on_random_captions_across_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(12)]
    lengths = rng.integers(1, 80, size=90)
    texts = [" ".join(rng.choice(vocabulary, size=n)) for n in lengths]
    items = [int(g) for g in rng.integers(0, 35, size=90)]
    monkeypatch.setattr(relevance_module, "ROUGE_BLOCK_ROWS", 16)
    got = rouge_relevance(texts, items, 36)
    rows = list(range(90))
    assert np.array_equal(got, pycocoevalcap_relevance(texts, items, 36, rows))
    monkeypatch.setattr(relevance_module, "ROUGE_BLOCK_ROWS", 7)
    assert np.array_equal(rouge_relevance(texts, items, 36, workers=2), got)


@pytest.mark.parametrize("language", ["en", "de"])
def test_equals_pycocoevalcap_on_real_multi30k_captions(shared_data, language):
    folder = shared_data / "multi30k" / "task2" / "raw"
    per_image = []
    for k in range(1, 6):
        with gzip.open(folder / f"val.{k}.{language}.gz", "rt", encoding="utf-8") as handle:
            per_image.append([next(handle).strip() for _ in range(40)])
    texts = [per_image[k][i] for i in range(40) for k in range(5)]
    items = [i for i in range(40) for _ in range(5)]
    got = rouge_relevance(texts, items, 40)
    assert np.array_equal(got, pycocoevalcap_relevance(texts, items, 40, range(len(texts))))
    assert np.all(got[np.arange(200), items] == 1.0)
    assert 0.0 < got.mean() < 0.5


def write_visualsearch_split(folder, texts_by_id: dict[str, str]):
    """A query caption file and an id list whose order differs from the captions' (one item has no caption)."""
    write_caption_file(folder / "test_de.caption.txt", list(texts_by_id.items()))
    (folder / "test_id.txt").write_text("v3\nv1\nv2\nv9\n", encoding="utf-8")
    return folder / "test_de.caption.txt", folder / "test_id.txt"


CAPTIONS = {
    "v1#de#0": "ein roter Wagen",
    "v2#de#0": "zwei Hunde rennen",
    "v1#de#1": "ein roter Bus",
    "v3#de#0": "Hunde rennen im Park",
}


def test_rouge_relevance_provider_follows_the_split_order_and_caches(tmp_path):
    captions, id_list = write_visualsearch_split(tmp_path, CAPTIONS)
    provider = RougeRelevance(str(captions), str(id_list), cache_dir=str(tmp_path / "cache"))
    provider.validate(4, 4)
    expected = rouge_relevance(list(CAPTIONS.values()), [1, 2, 1, 0], 4)
    assert np.array_equal(np.asarray(provider._matrix), expected)
    block = provider(torch.arange(1, 3), torch.arange(4))
    assert np.array_equal(block.numpy(), expected[1:3])
    first_key = provider.cache_path
    assert sorted((tmp_path / "cache").glob("rouge_l-*.npy")) == [first_key]

    marker = np.full((4, 4), 0.25, dtype=np.float32)
    save_relevance(first_key, marker)
    again = RougeRelevance(str(captions), str(id_list), cache_dir=str(tmp_path / "cache"))
    again.validate(4, 4)
    assert np.array_equal(np.asarray(again._matrix), marker), "a second provider reads the cache, not recomputing"

    captions.write_text(captions.read_text(encoding="utf-8").replace("roter Bus", "blauer Bus"), encoding="utf-8")
    changed = RougeRelevance(str(captions), str(id_list), cache_dir=str(tmp_path / "cache"))
    assert changed.cache_path != first_key
    changed.validate(4, 4)
    assert np.array_equal(
        np.asarray(changed._matrix)[:, :3],
        rouge_relevance(
            [CAPTIONS["v1#de#0"], CAPTIONS["v2#de#0"], "ein blauer Bus", CAPTIONS["v3#de#0"]], [1, 2, 1, 0], 3
        ),
    )
    assert len(list((tmp_path / "cache").glob("rouge_l-*.npy"))) == 2


def test_rouge_relevance_provider_without_id_list_and_errors(tmp_path):
    captions, _ = write_visualsearch_split(tmp_path, CAPTIONS)
    provider = RougeRelevance(str(captions), cache_dir=str(tmp_path / "cache"))
    provider.validate(4, 3)
    assert np.array_equal(np.asarray(provider._matrix), rouge_relevance(list(CAPTIONS.values()), [0, 1, 0, 2], 3))
    with pytest.raises(ValueError, match=r"test_de.caption.txt gives 4 queries x 3 gallery items, the evaluated split"):
        provider.validate(4, 5)
    (tmp_path / "short_id.txt").write_text("v1\nv2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"id v3#de#0: visual item v3 is not in the gallery list"):
        RougeRelevance(str(captions), str(tmp_path / "short_id.txt"), cache_dir=str(tmp_path / "cache")).validate(4, 2)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        RougeRelevance(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="captions_per_item"):
        RougeRelevance(str(captions), str(tmp_path / "short_id.txt"), captions_per_item=5)


def test_rouge_relevance_provider_on_precomp_captions(tmp_path):
    texts = [f"a photo of thing {i} number {k}" for i in range(3) for k in range(5)]
    write_precomp(tmp_path, "test", texts, np.zeros((3, 4), dtype=np.float32))
    provider = RougeRelevance(str(tmp_path / "test_caps.txt"), captions_per_item=5, cache_dir=str(tmp_path / "c"))
    provider.validate(15, 3)
    assert np.array_equal(np.asarray(provider._matrix), rouge_relevance(texts, [i // 5 for i in range(15)], 3))
    write_precomp(tmp_path, "odd", texts[:7], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(DataFormatError, match="odd_caps.txt: line 7: 7 captions are not 5 per item"):
        RougeRelevance(str(tmp_path / "odd_caps.txt"), captions_per_item=5, cache_dir=str(tmp_path / "c")).validate(
            7, 1
        )
