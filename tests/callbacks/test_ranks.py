"""Per-query ranks (``RankWriter``) and DCOT confidences (``ConfidenceWriter``): hand-checked ranks, the run's own
test metrics recomputed from ``ranks.json``, and the same file from 1 and 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.callbacks.ranks import recall_at
from leccr_lightning.data.visualsearch import read_caption_file
from leccr_lightning.metrics import DotScorer, FusedScorer, retrieval_report, retrieval_report_from_views
from tests.helpers import experiment

CALLBACKS = [
    "--trainer.callbacks+=leccr_lightning.callbacks.ranks.RankWriter",
    "--trainer.callbacks+=leccr_lightning.callbacks.ranks.ConfidenceWriter",
]


def retrieval_ranks(scorer, queries, gallery, targets, chunk_size=None):
    """(t2v ranks, v2t ranks) the evaluation core keeps beside its report."""
    _, ranks = retrieval_report_from_views(queries, gallery, targets, scorer, chunk_size=chunk_size, return_ranks=True)
    return ranks.t2v, ranks.v2t


def test_ranks_of_a_hand_made_score_matrix():
    """Gallery g0, g1, g2 (g2 without captions); ranks counted by hand from the dot products below."""
    gallery = {"gallery": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])}
    queries = {"query": torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.6, 0.5], [0.0, 1.0]])}
    targets = torch.tensor([0, 1, 1, 0])
    # scores: q0 [1, 0, .5] q1 [.9, .1, .5] q2 [.6, .5, .55] q3 [0, 1, .5]
    t2v, v2t = retrieval_ranks(DotScorer(), queries, gallery, targets)
    assert t2v.tolist() == [1, 3, 3, 3]
    # g0: best caption q0 (1.0), nothing above -> 1; g1: best q2 (0.5), q3 scores 1.0 above it -> 2
    assert v2t.tolist() == [1, 2]
    assert recall_at(t2v, (1, 3)) == [25.0, 100.0]
    _, ranks = retrieval_report_from_views(queries, gallery, targets, DotScorer(), return_ranks=True)
    assert ranks.v2t_items.tolist() == [0, 1]


def test_ranks_give_the_metric_report_in_chunks_and_with_fused_scores():
    generator = torch.Generator().manual_seed(0)
    queries = {"a": torch.randn(53, 8, generator=generator), "b": torch.randn(53, 8, generator=generator)}
    gallery = {"g": torch.randn(17, 8, generator=generator)}
    targets = torch.randint(0, 15, (53,), generator=generator)  # items 15, 16 have no caption
    scorer = DotScorer("a", "g")
    report = retrieval_report(queries["a"] @ gallery["g"].T, targets)
    t2v, v2t = retrieval_ranks(scorer, queries, gallery, targets)
    assert recall_at(t2v, (1, 5, 10)) == pytest.approx([report[f"t2v_r{k}"] for k in (1, 5, 10)])
    assert recall_at(v2t, (1, 5, 10)) == pytest.approx([report[f"v2t_r{k}"] for k in (1, 5, 10)])
    assert float(np.median(t2v.numpy())) == report["t2v_medr"] and float(t2v.double().mean()) == report["t2v_meanr"]
    assert float(v2t.double().mean()) == pytest.approx(report["v2t_meanr"])
    chunked_t2v, chunked_v2t = retrieval_ranks(scorer, queries, gallery, targets, chunk_size=7)
    assert torch.equal(chunked_t2v, t2v) and torch.equal(chunked_v2t, v2t)

    fused = FusedScorer([(DotScorer("a", "g"), 0.3), (DotScorer("b", "g"), 0.7)])
    fused_report = retrieval_report_from_views(queries, gallery, targets, fused, chunk_size=10)
    fused_t2v, fused_v2t = retrieval_ranks(fused, queries, gallery, targets, chunk_size=10)
    assert recall_at(fused_t2v, (1, 5, 10)) == pytest.approx([fused_report[f"t2v_r{k}"] for k in (1, 5, 10)])
    assert recall_at(fused_v2t, (1, 5, 10)) == pytest.approx([fused_report[f"v2t_r{k}"] for k in (1, 5, 10)])


@pytest.fixture(scope="module")
def dcot_run(synthetic_root, tmp_path_factory):
    """DCOT tiny, 2 epochs on the 40%-noisy collection, tested, with both writers."""
    import sys

    from leccr_lightning.cli import lightning_main
    from tests.helpers import cli_args

    out = tmp_path_factory.mktemp("dcot_ranks")
    argv, sys.argv = sys.argv, ["leccr"]
    try:
        extra = ["--trainer.max_epochs", "2", "--test_after_fit", "true", *CALLBACKS]
        cli = lightning_main(["fit", *cli_args(experiment("dcot"), synthetic_root, out, *extra)])
    finally:
        sys.argv = argv
    return cli, Path(cli.trainer.log_dir)


def test_ranks_json_reproduces_the_test_metrics_of_the_run(dcot_run, synthetic_root):
    _, folder = dcot_run
    metrics = json.loads((folder / "test_metrics.json").read_text(encoding="utf-8"))
    ranks = json.loads((folder / "ranks.json").read_text(encoding="utf-8"))
    queries = read_caption_file(synthetic_root / "synthetic" / "TextData" / "synthtest_de.caption.txt")
    assert ranks["t2v"]["ids"] == list(queries.ids) and ranks["gallery_size"] == 31
    t2v, v2t = np.asarray(ranks["t2v"]["ranks"]), np.asarray(ranks["v2t"]["ranks"])
    for direction, values in (("t2v", t2v), ("v2t", v2t)):
        for k in (1, 5, 10):
            assert 100 * np.mean(values <= k) == pytest.approx(metrics[f"test/{direction}_r{k}"], abs=1e-4)
        assert np.median(values) == pytest.approx(metrics[f"test/{direction}_medr"])
        assert values.mean() == pytest.approx(metrics[f"test/{direction}_meanr"], rel=1e-6)


def test_confidences_json_holds_every_training_caption(dcot_run, synthetic_root):
    _, folder = dcot_run
    payload = json.loads((folder / "confidences.json").read_text(encoding="utf-8"))
    source = read_caption_file(synthetic_root / "synthetic" / "TextData" / "synthtrain_enc.caption.txt")
    assert payload["epoch"] == 1 and set(payload["confidences"]) == set(source.ids)
    values = np.asarray(list(payload["confidences"].values()))
    assert np.all(np.isfinite(values)) and np.all(values > 0) and values.std() > 0


def test_a_run_without_dcot_writes_no_confidences(synthetic_root, run_cli, tmp_path):
    cli = run_cli("fit", experiment("baseline"), synthetic_root, tmp_path, "--trainer.max_epochs", "1", *CALLBACKS)
    assert not (Path(cli.trainer.log_dir) / "confidences.json").exists()
    assert not (Path(cli.trainer.log_dir) / "ranks.json").exists()  # fit alone runs no test


@pytest.mark.ddp
def test_one_and_two_processes_write_the_same_ranks(dcot_run, synthetic_root, run_cli, tmp_path):
    cli, _ = dcot_run
    checkpoint = cli.trainer.checkpoint_callback.best_model_path
    args = ["--ckpt_path", checkpoint, CALLBACKS[0]]
    single = run_cli("test", experiment("dcot"), synthetic_root, tmp_path / "one", *args)
    assert single.trainer.world_size == 1
    double = run_cli(
        "test", experiment("dcot"), synthetic_root, tmp_path / "two", *args,
        "--trainer.strategy", "ddp_fork", "--trainer.devices", "2",
    )  # fmt: skip
    assert double.trainer.world_size == 2
    # under ddp_fork the CLI's test_metrics.json lands in the next logger version, so find ranks.json by name
    one, two = (
        [json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / d).rglob("ranks.json")] for d in ("one", "two")
    )
    assert len(one) == len(two) == 1
    assert one[0] == two[0]
