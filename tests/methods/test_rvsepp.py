"""RVSE++ building blocks (GPO, residual MLP, BiGRU text) and the tiny CLI run."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.methods.objectives import ListwiseObjective
from leccr_lightning.methods.rvsepp import RVSEPlusPlus
from leccr_lightning.modules.gpo import GPO, ResidualMLP, sine_positions
from leccr_lightning.modules.gru_text import BiGRUTextEncoder
from tests.helpers import assert_consistent_report, experiment


def test_sine_positions_hand_values():
    codes = sine_positions(3, 4)
    assert torch.allclose(codes[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert codes[2, 0] == pytest.approx(torch.sin(torch.tensor(2.0)).item())
    assert codes[1, 2] == pytest.approx(torch.sin(torch.tensor(0.01)).item(), abs=1e-6)


def test_gpo_is_a_set_function_that_ignores_padding():
    torch.manual_seed(0)
    gpo = GPO()
    features = torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pooled = gpo(features, mask)
    shuffled = gpo(features[:, torch.tensor([4, 2, 0, 1, 3])], mask)
    assert torch.allclose(pooled[0], shuffled[0], atol=1e-6)
    padded = features.clone()
    padded[1, 3:] = 100.0
    assert torch.allclose(gpo(padded, mask)[1], pooled[1], atol=1e-6)
    weights = gpo.weights(mask)
    assert torch.allclose(weights.sum(1), torch.ones(2)) and float(weights[1, 3:].abs().max()) < 1e-6
    single = gpo(features[:, :1], torch.ones(2, 1, dtype=torch.bool))
    assert torch.allclose(single, features[:, 0], atol=1e-6)


def test_residual_mlp_keeps_the_input_when_the_branch_is_zero():
    mlp = ResidualMLP(8)
    torch.nn.init.zeros_(mlp.fc2.weight)
    torch.nn.init.zeros_(mlp.fc2.bias)
    x = torch.randn(2, 3, 8)
    assert torch.equal(mlp(x), x)


def test_bigru_text_encoder_ignores_padding_and_is_unit_norm():
    torch.manual_seed(0)
    encoder = BiGRUTextEncoder(vocab_size=20, embed_dim=8, word_dim=6).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [3, 4, 5, 7, 9]])
    mask = ids != 0
    out = encoder(ids, mask)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    other = encoder(torch.tensor([[3, 4, 5, 8, 8]]), torch.tensor([[True, True, True, False, False]]))
    assert torch.allclose(out[0], other[0], atol=1e-6)


def test_rvsepp_takes_any_objective_and_needs_a_vocabulary_for_the_gru():
    with pytest.raises(ValueError, match="vocab_size"):
        RVSEPlusPlus(visual_dim=8)
    model = RVSEPlusPlus(
        visual_dim=8,
        vocab_size=30,
        embed_dim=16,
        word_dim=8,
        objective=ListwiseObjective(),
        train_roles=("source",),
    )
    ids = torch.randint(1, 30, (4, 6))
    batch = {
        "visual": torch.randn(4, 3, 8),
        "visual_mask": torch.ones(4, 3, dtype=torch.bool),
        "visual_index": torch.arange(4),
        "caption_ids": list("abcd"),
        "text": {"source": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}},
    }
    losses = model.compute_losses(batch)
    losses["loss"].backward()
    assert set(losses) == {"loss", "source"} and torch.isfinite(losses["loss"])
    assert model.encode_gallery(batch)["gallery"].shape == (4, 16)


def test_rvsepp_tiny_trains_and_tests_through_the_cli(tmp_path, run_cli):
    root = tmp_path / "synth"
    write_synthetic_collection(root, SynthConfig(n_train=80, n_val=20, n_test=20))
    cli = run_cli("fit", experiment("rvsepp"), root, tmp_path, "--trainer.max_epochs", "1")
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule)
    assert_consistent_report(results[0])
