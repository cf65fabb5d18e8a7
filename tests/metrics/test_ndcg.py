"""NDCG@k in the shared report: chunked NDCG, the precomputed relevance provider, RetrievalMetric and the CLI."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.precomp import read_precomp_split
from leccr_lightning.metrics import RetrievalMetric, retrieval_report
from leccr_lightning.metrics.protocols import ndcg_report, ndcg_report_from_views
from leccr_lightning.metrics.relevance import PrecomputedRelevance, rouge_relevance, save_relevance
from leccr_lightning.metrics.scoring import DotScorer, FusedScorer
from tests.data.test_precomp import learnable_split


def tied_problem(num_queries: int, num_gallery: int, seed: int):
    """Integer embeddings (many exact score ties) and a sparse graded relevance matrix."""
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randint(-2, 3, (num_queries, 3), generator=generator).float()
    gallery = torch.randint(-2, 3, (num_gallery, 3), generator=generator).float()
    keep = torch.rand(num_queries, num_gallery, generator=generator) > 0.5
    relevance = torch.rand(num_queries, num_gallery, generator=generator) * keep
    return queries, gallery, relevance


@pytest.mark.parametrize(("k", "chunk_size"), [(25, 7), (3, 1), (5, None), (100, 8)])
@pytest.mark.parametrize("teran_v2t", [False, True])
def test_chunked_ndcg_equals_the_full_matrix_report(k, chunk_size, teran_v2t):
    queries, gallery, relevance = tied_problem(37, 13, seed=k)
    expected = ndcg_report(queries @ gallery.T, relevance, k, teran_v2t)
    got = ndcg_report_from_views(
        {"query": queries},
        {"gallery": gallery},
        lambda q, g: relevance[q][:, g],
        DotScorer(),
        k,
        chunk_size,
        teran_v2t,
    )
    assert got == pytest.approx(expected, rel=1e-6)


def test_hand_checked_ndcg_and_binary_relevance_rank_rule():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    relevance = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    report = ndcg_report_from_views(
        {"query": queries}, {"gallery": gallery}, lambda q, g: relevance[q][:, g], DotScorer()
    )
    # query 0 ranks items 0, 1, 2: DCG = 1/log2(3) + (2^0.5 - 1)/2; ideal = 1 + (2^0.5 - 1)/log2(3); query 1: 1.
    ideal = 1 + (math.sqrt(2) - 1) / math.log2(3)
    t2v = ((1 / math.log2(3) + (math.sqrt(2) - 1) / 2) / ideal + 1.0) / 2
    assert report["t2v_ndcg@25"] == pytest.approx(100 * t2v, rel=1e-6)
    # binary relevance, one positive: NDCG = 1 / log2(1 + rank) (itr spec §10.5 item 5); item 2 ranks query 1 first.
    binary = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    report = ndcg_report_from_views({"query": queries}, {"gallery": gallery}, lambda q, g: binary[q][:, g], DotScorer())
    assert report["t2v_ndcg@25"] == pytest.approx(100 * (1 / math.log2(4) + 1.0) / 2, rel=1e-6)
    # v2t: item 2 ranks both of its relevant queries first (NDCG 1); items 0 and 1 have no relevant query (NDCG 0).
    assert report["v2t_ndcg@25"] == pytest.approx(100 / 3, rel=1e-6)


def test_precomputed_relevance_checks_shape_reads_blocks_and_pickles_without_the_matrix(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    save_relevance(tmp_path / "rel.npy", matrix)
    provider = PrecomputedRelevance(str(tmp_path / "rel.npy"))
    with pytest.raises(ValueError, match="call validate"):
        provider(torch.arange(2), torch.arange(4))
    with pytest.raises(DataFormatError, match=r"rel\.npy: expected a relevance matrix of shape \(4, 3\)"):
        provider.validate(4, 3)
    provider.validate(3, 4)
    assert torch.equal(
        provider(torch.tensor([2, 0]), torch.tensor([1, 3])), torch.from_numpy(matrix[[2, 0]][:, [1, 3]])
    )
    transposed = PrecomputedRelevance(str(tmp_path / "rel.npy"), transpose=True)
    transposed.validate(4, 3)
    assert torch.equal(transposed(torch.tensor([3]), torch.arange(3)), torch.from_numpy(matrix.T[[3]]))
    copy = pickle.loads(pickle.dumps(provider))
    assert copy._matrix is None
    with pytest.raises(FileNotFoundError, match="relevance matrix"):
        PrecomputedRelevance(str(tmp_path / "missing.npy"))


def _update_in_shards(metric: RetrievalMetric, queries, gallery, targets, order) -> None:
    """Feed the metric in two uneven shards per role, out of order, with a padded duplicate (like DDP)."""
    for role, embeddings in (("query", queries), ("gallery", gallery)):
        positions = torch.cat([order(len(embeddings)), torch.tensor([0])])
        for part in (positions[:3], positions[3:]):
            extra = targets[part] if role == "query" else None
            metric.update(role, part, embeddings[part], extra)


def test_retrieval_metric_adds_ndcg_keys_equal_to_the_full_report():
    queries, gallery, relevance = tied_problem(20, 6, seed=3)
    targets = torch.arange(20) % 6
    calls = []

    def provider(query_positions, gallery_positions):
        calls.append(len(query_positions))
        return relevance[query_positions][:, gallery_positions]

    metric = RetrievalMetric(chunk_size=8, relevance=provider, ndcg_k=4)
    _update_in_shards(
        metric, queries, gallery, targets, lambda n: torch.randperm(n, generator=torch.Generator().manual_seed(n))
    )
    report = metric.compute()
    scores = queries @ gallery.T
    expected = retrieval_report(scores, targets) | ndcg_report(scores, relevance, 4)
    assert set(report) == set(expected)
    assert report == pytest.approx(expected, rel=1e-6)
    assert calls == [8, 8, 4]
    plain = RetrievalMetric(chunk_size=8)
    _update_in_shards(plain, queries, gallery, targets, torch.arange)
    assert not any("ndcg" in key for key in plain.compute())


def test_retrieval_metric_ndcg_with_a_fused_scorer():
    queries, gallery, relevance = tied_problem(12, 5, seed=4)
    views = {"query": queries, "other": queries.flip(1)}
    scorer = FusedScorer([(DotScorer("query"), 0.3), (DotScorer("other"), 0.7)])
    metric = RetrievalMetric(scorer=scorer, chunk_size=5, relevance=lambda q, g: relevance[q][:, g])
    metric.update("query", torch.arange(12), views, torch.arange(12) % 5)
    metric.update("gallery", torch.arange(5), gallery)
    full = FusedScorer([(DotScorer("query"), 0.3), (DotScorer("other"), 0.7)]).fit(views, {"gallery": gallery})
    expected = ndcg_report(full(views, {"gallery": gallery}), relevance, 25)
    assert {k: v for k, v in metric.compute().items() if "ndcg" in k} == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_rvsepp_reports_test_ndcg_from_rouge_relevance_cached_by_the_cli(tmp_path):
    folder = tmp_path / "f30k_precomp"
    learnable_split(folder, "train", 48, seed=1)
    learnable_split(folder, "dev", 6, seed=2)
    learnable_split(folder, "test", 8, seed=3)
    relevance = {
        "class_path": "leccr_lightning.metrics.relevance.RougeRelevance",
        "init_args": {"captions": str(folder / "test_caps.txt"), "captions_per_item": 5, "cache_dir": str(tmp_path)},
    }
    cli = lightning_main(
        [
            "fit",
            "--config",
            "configs/experiments/rvsepp/f30k.yaml",
            "--data.init_args.root",
            str(tmp_path),
            "--data.init_args.word_min_count",
            "1",
            "--data.init_args.batch_size",
            "32",
            "--data.init_args.num_workers",
            "0",
            "--model.init_args.embed_dim",
            "32",
            "--model.init_args.word_dim",
            "32",
            "--model.init_args.eval_relevance",
            json.dumps({"test": relevance}),
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--test_after_fit",
            "true",
        ]
    )
    assert not any("ndcg" in key for key in cli.trainer.logged_metrics if key.startswith("val/"))
    metrics = json.loads(Path(cli.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    assert 0.0 < metrics["test/t2v_ndcg@25"] <= 100.0 and 0.0 < metrics["test/v2t_ndcg@25"] <= 100.0
    test = read_precomp_split(folder, "test")
    targets = [int(p.visual_id) for p in test.captions.parsed]
    (cached,) = tmp_path.glob("rouge_l-*.npy")
    assert np.array_equal(np.load(cached), rouge_relevance(test.captions.texts, targets, test.num_images))
    assert metrics["test/t2v_r1"] >= 0.0 and "test/sumr" in metrics


def test_eval_relevance_is_per_stage_and_rejects_unknown_stages(tmp_path):
    from leccr_lightning.methods.rvsepp import RVSEPlusPlus

    save_relevance(tmp_path / "rel.npy", np.ones((4, 2), dtype=np.float32))
    provider = PrecomputedRelevance(str(tmp_path / "rel.npy"))
    model = RVSEPlusPlus(visual_dim=8, vocab_size=10, embed_dim=8, word_dim=8, eval_relevance={"test": provider})
    assert model._metric("test").relevance is provider and model._metric("val").relevance is None
    with pytest.raises(ValueError, match="eval_relevance keys must be 'val' and/or 'test'"):
        RVSEPlusPlus(visual_dim=8, vocab_size=10, eval_relevance={"tset": provider})
