"""Ranking objectives as plug-ins: hand-checked special cases, relevance routing, and the tiny CLI runs."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.losses import hinge_triplet, kendall_rank_loss
from leccr_lightning.methods.baseline import DualEncoderBaseline
from leccr_lightning.methods.objectives import (
    BCLSObjective,
    ListwiseObjective,
    SelHNObjective,
    TripletObjective,
    UnifiedObjective,
)
from leccr_lightning.methods.objectives.ranking import batch_texts
from leccr_lightning.metrics.relevance import BinaryRelevance, InBatchRelevance
from tests.helpers import assert_consistent_report, pair_context
from tests.helpers import experiment as experiment_config


class FixedRelevance(InBatchRelevance):
    """A test provider returning a given matrix off the positives."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def similarity(self, texts):
        return self.matrix


def _scores(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.nn.functional.normalize(torch.randn(n, 8, generator=generator), dim=1)
    scores = scores @ torch.nn.functional.normalize(torch.randn(n, 8, generator=generator), dim=1).T
    return scores, torch.eye(n, dtype=torch.bool)


def test_selhn_objective_is_half_the_mean_of_both_directions_and_hardest_at_eps_zero():
    scores, mask = _scores()
    expected = 0.5 * (
        hinge_triplet(scores, mask, mining="selective", reduction="mean")
        + hinge_triplet(scores.T, mask, mining="selective", reduction="mean")
    )
    assert SelHNObjective()(pair_context(scores, mask)) == pytest.approx(float(expected))
    hardest = TripletObjective(mining="hardest", reduction="mean")(pair_context(scores, mask))
    assert SelHNObjective(selective_eps=0.0)(pair_context(scores, mask)) == pytest.approx(0.5 * float(hardest))
    # eps >= 2 (cosine range): always the all-negatives mean (itr spec §4.8)
    all_mean = TripletObjective(mining="all_mean", reduction="mean")(pair_context(scores, mask))
    assert SelHNObjective(selective_eps=2.5)(pair_context(scores, mask)) == pytest.approx(0.5 * float(all_mean))


def test_unified_objective_tends_to_the_hardest_triplet():
    scores, mask = _scores()
    hardest = 0.5 * float(TripletObjective(mining="hardest", reduction="mean")(pair_context(scores, mask)))
    assert UnifiedObjective(tau=1e-3)(pair_context(scores, mask)) == pytest.approx(hardest, abs=1e-3)
    assert float(UnifiedObjective(tau=0.1)(pair_context(scores, mask))) > hardest


def test_bcls_kendall_term_uses_the_transposed_relevance_unless_legacy():
    scores, mask = _scores()
    relevance = torch.rand(6, 6, generator=torch.Generator().manual_seed(3))
    objective = BCLSObjective(kendall_weight=1.0, relevance=FixedRelevance(relevance), binary_mining="hardest")
    r = torch.where(mask, torch.ones(()), relevance)
    binary = 0.5 * float(TripletObjective(mining="hardest", reduction="mean")(pair_context(scores, mask)))
    kendall = 0.5 * float(kendall_rank_loss(scores, r) + kendall_rank_loss(scores.T, r.T))
    assert objective(pair_context(scores, mask)) == pytest.approx(binary + kendall, rel=1e-6)
    # the released code's one relevance[image, text] = r^T serves both directions: the t2i side reads r^T too
    legacy = BCLSObjective(relevance=FixedRelevance(relevance), binary_mining="hardest", legacy_untransposed=True)
    legacy_kendall = 0.5 * float(kendall_rank_loss(scores, r.T) + kendall_rank_loss(scores.T, r.T))
    assert legacy(pair_context(scores, mask)) == pytest.approx(binary + legacy_kendall, rel=1e-6)
    with pytest.raises(ValueError, match="binary_mining"):
        BCLSObjective(binary_mining="semi")


def test_bcls_kendall_vanishes_when_scores_follow_the_labels():
    relevance = torch.tensor([[0.0, 0.9, 0.1], [0.5, 0.0, 0.1], [0.1, 0.6, 0.0]])
    scores = torch.where(torch.eye(3, dtype=torch.bool), torch.ones(()), relevance)
    zero_binary = dict(binary_mining="hardest", margin=0.0)
    concordant = BCLSObjective(relevance=FixedRelevance(relevance), **zero_binary)
    assert float(concordant(pair_context(scores, torch.eye(3, dtype=torch.bool)))) == 0.0
    reversed_scores = -scores
    assert float(concordant(pair_context(reversed_scores, torch.eye(3, dtype=torch.bool)))) > 0.0


def test_listwise_weight_zero_is_triplet_hn_and_binary_relevance_rewards_the_positive():
    scores, mask = _scores()
    hardest = 0.5 * float(TripletObjective(mining="hardest", reduction="mean")(pair_context(scores, mask)))
    unweighted = ListwiseObjective(sndcg_weight=0.0, relevance=BinaryRelevance())
    assert unweighted(pair_context(scores, mask)) == pytest.approx(hardest)
    listwise = ListwiseObjective(sndcg_weight=1.0, relevance=BinaryRelevance())
    good = listwise(pair_context(torch.eye(6) * 2 - 1, mask))
    bad = listwise(pair_context(1 - torch.eye(6) * 2, mask))
    assert float(good) < 1e-6 < float(bad)
    with pytest.raises(ValueError, match="sndcg_weight"):
        ListwiseObjective(sndcg_weight=1.5)


def test_batch_texts_reads_the_row_tokens_and_refuses_gathered_rows():
    tokens = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    batch = {"caption_ids": ["a#enc#0", "b#enc#0"], "text": {"target": tokens}}
    texts = batch_texts(pair_context(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool), batch=batch))
    assert texts.input_ids is tokens["input_ids"] and texts.caption_ids == ["a#enc#0", "b#enc#0"]
    assert torch.equal(texts.index, torch.arange(2))
    gathered = pair_context(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool), batch=batch, gathered=True)
    with pytest.raises(ValueError, match="gathered"):
        batch_texts(gathered)


@pytest.mark.parametrize("objective", [SelHNObjective(), UnifiedObjective(), BCLSObjective(), ListwiseObjective()])
def test_objectives_plug_into_the_baseline_and_give_finite_gradients(objective):
    torch.manual_seed(0)
    model = DualEncoderBaseline(
        visual_dim=8,
        vocab_size=30,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        visual_hidden=16,
        embed_dim=16,
        objective=objective,
    )
    ids = torch.randint(1, 30, (4, 5))
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch = {
        "visual": torch.randn(4, 1, 8),
        "visual_mask": torch.ones(4, 1, dtype=torch.bool),
        "visual_index": torch.tensor([0, 1, 1, 2]),
        "text": {"source": tokens, "target": tokens},
        "caption_ids": ["a#enc#0", "b#enc#0", "b#enc#1", "c#enc#0"],
    }
    losses = model.compute_losses(batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_collection(root, SynthConfig(n_train=80, n_val=20, n_test=20))
    return root


@pytest.mark.parametrize("experiment", ["unified", "bcls", "listwise"])
def test_tiny_experiment_trains_and_tests_through_the_cli(experiment, synthetic_root, tmp_path, run_cli):
    cli = run_cli("fit", experiment_config(experiment), synthetic_root, tmp_path, "--trainer.max_epochs", "1")
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule)
    assert_consistent_report(results[0])
