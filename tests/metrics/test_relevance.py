"""Relevance providers: in-batch max over an item's captions, files and memmaps (ROUGE-L: test_rouge_relevance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.metrics.relevance import (
    BatchTexts,
    BinaryRelevance,
    CaptionEmbeddingRelevance,
    TokenOverlapRelevance,
    binary_relevance,
    encode_captions,
    load_relevance,
    max_over_item,
    save_relevance,
)


def test_max_over_item_takes_the_best_caption_of_the_candidate_item():
    similarity = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.1], [0.7, 0.1, 1.0]])
    index = torch.tensor([5, 9, 5])
    out = max_over_item(similarity, index)
    assert torch.allclose(out[1], torch.tensor([0.2, 1.0, 0.2]))
    assert torch.allclose(out[:, 0], out[:, 2])


def _texts(ids: list[list[int]], index: list[int]) -> BatchTexts:
    input_ids = torch.tensor(ids)
    return BatchTexts(index=torch.tensor(index), input_ids=input_ids, attention_mask=input_ids != 0)


def test_token_overlap_relevance_values_and_positives():
    texts = _texts([[3, 4, 0], [3, 4, 0], [5, 6, 7]], [0, 1, 2])
    mask = torch.eye(3, dtype=torch.bool)
    cos = TokenOverlapRelevance("cos")(mask, texts)
    assert torch.allclose(cos, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    shifted = TokenOverlapRelevance("shifted")(mask, texts)
    assert shifted[0, 2] == pytest.approx(0.5)
    assert torch.equal(BinaryRelevance()(mask, texts), mask.float())
    with pytest.raises(ValueError, match="square"):
        BinaryRelevance()(torch.ones(3, 6, dtype=torch.bool), texts)
    with pytest.raises(ValueError, match="mapping"):
        TokenOverlapRelevance("dot")


def test_caption_embedding_relevance_takes_the_max_over_all_reference_captions_of_the_item(tmp_path):
    ids = ["v1#enc#0", "v1#enc#1", "v2#enc#0"]
    (tmp_path / "caps.txt").write_text("".join(f"{i} some text\n" for i in ids))
    np.save(tmp_path / "emb.npy", np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32))
    provider = CaptionEmbeddingRelevance(str(tmp_path / "emb.npy"), str(tmp_path / "caps.txt"), mapping="cos")
    texts = BatchTexts(index=torch.tensor([0, 1]), caption_ids=["v2#enc#0", "v1#enc#1"])
    relevance = provider(torch.eye(2, dtype=torch.bool), texts)
    # "cos" is the raw inner product (ITM_CLS): v2's caption against v1's references [3, 0] (absent from the
    # batch) and [0, 2] -> max(3, 2); v1#enc#1 against v2's only reference -> 2; positives get 1
    assert torch.allclose(relevance, torch.tensor([[1.0, 3.0], [2.0, 1.0]]))
    shifted = CaptionEmbeddingRelevance(str(tmp_path / "emb.npy"), str(tmp_path / "caps.txt"), mapping="shifted")
    half = (1 + 2**-0.5) / 2
    assert torch.allclose(shifted(torch.eye(2, dtype=torch.bool), texts), torch.tensor([[1.0, half], [half, 1.0]]))
    with pytest.raises(DataFormatError, match="v9#enc#0"):
        provider(torch.eye(1, dtype=torch.bool), BatchTexts(index=torch.tensor([0]), caption_ids=["v9#enc#0"]))
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataFormatError, match="bad.npy"):
        CaptionEmbeddingRelevance(str(tmp_path / "bad.npy"), str(tmp_path / "caps.txt"))


def test_caption_embedding_relevance_binds_a_relative_file_to_the_datamodule_training_captions(tmp_path):
    class Data:
        folder = tmp_path
        train_caption_ids = ("0#enc#0", "0#enc#1", "1#enc#0")

    np.save(tmp_path / "train_caps_emb.npy", np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32))
    provider = CaptionEmbeddingRelevance("train_caps_emb.npy", mapping="cos")
    texts = BatchTexts(index=torch.tensor([0, 1]), caption_ids=["0#enc#1", "1#enc#0"])
    with pytest.raises(ValueError, match="not bound"):
        provider(torch.eye(2, dtype=torch.bool), texts)
    provider.bind_data(Data())
    assert torch.allclose(provider(torch.eye(2, dtype=torch.bool), texts), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="train_caption_ids"):
        CaptionEmbeddingRelevance("train_caps_emb.npy").bind_data(object())


def test_precomputed_relevance_memmap_npy_and_bin(tmp_path):
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_relevance(tmp_path / "r.npy", matrix)
    loaded = load_relevance(tmp_path / "r.npy", 3, 2)
    assert isinstance(loaded, np.memmap) and np.array_equal(loaded, matrix)
    assert np.array_equal(load_relevance(tmp_path / "r.npy", 2, 3, transpose=True), matrix.T)
    matrix.tofile(tmp_path / "r.bin")
    assert np.array_equal(load_relevance(tmp_path / "r.bin", 3, 2), matrix)
    with pytest.raises(DataFormatError, match="r.bin"):
        load_relevance(tmp_path / "r.bin", 4, 2)
    with pytest.raises(DataFormatError, match="shape"):
        load_relevance(tmp_path / "r.npy", 2, 3)


def test_binary_relevance_from_ids():
    assert torch.equal(binary_relevance(torch.tensor([1, 0, 1]), 2), torch.tensor([[0.0, 1], [1, 0], [0, 1]]))


def test_encode_captions_with_a_local_hf_encoder(tmp_path):
    from transformers import BertConfig, BertModel

    from leccr_lightning.data.text import train_wordpiece

    corpus = ["a red car", "a blue bus", "two dogs"]
    tokenizer = train_wordpiece(corpus, vocab_size=60)
    tokenizer.save_pretrained(tmp_path)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    embeddings = encode_captions(corpus + ["a red car"], str(tmp_path), batch_size=2)
    assert embeddings.shape == (4, 16) and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.allclose(embeddings[0], embeddings[3], atol=1e-5)
