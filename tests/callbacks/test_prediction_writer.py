"""Top-k retrieval for `leccr predict`: the torch and faiss backends agree; faiss refuses non-dot-product scorers."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.callbacks.retrieval_writer import RetrievalPredictionWriter, top_k_blocks
from leccr_lightning.metrics import DotScorer, FusedScorer


def test_faiss_and_torch_top_k_agree():
    generator = torch.Generator().manual_seed(0)
    queries = {"query": torch.nn.functional.normalize(torch.randn(37, 16, generator=generator), dim=1)}
    gallery = {"gallery": torch.nn.functional.normalize(torch.randn(23, 16, generator=generator), dim=1)}
    scorer = DotScorer()
    by_torch = list(top_k_blocks(scorer, queries, gallery, k=5, chunk_size=10, backend="torch"))
    by_faiss = list(top_k_blocks(scorer, queries, gallery, k=5, chunk_size=10, backend="faiss"))
    assert [b[0] for b in by_torch] == [b[0] for b in by_faiss] == [0, 10, 20, 30]
    assert torch.equal(torch.cat([b[2] for b in by_torch]), torch.cat([b[2] for b in by_faiss]).long())
    assert torch.allclose(torch.cat([b[1] for b in by_torch]), torch.cat([b[1] for b in by_faiss]), atol=1e-5)


def test_faiss_backend_needs_a_dot_product_scorer():
    views = {"query": torch.randn(3, 4), "translated": torch.randn(3, 4)}
    fused = FusedScorer([(DotScorer("query"), 0.5), (DotScorer("translated"), 0.5)])
    with pytest.raises(ValueError, match="needs a DotScorer"):
        list(top_k_blocks(fused, views, {"gallery": torch.randn(5, 4)}, k=2, chunk_size=2, backend="faiss"))
    with pytest.raises(ValueError, match="unknown top-k backend 'annoy'"):
        RetrievalPredictionWriter(backend="annoy")
