"""CL2CM (ccr_methods §4, [recon]): loss composition, detached relational teacher, CM-only inference, CLI run."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.methods.cl2cm import CL2CM
from tests.helpers import assert_consistent_report, experiment, written_test_metrics


def _model() -> CL2CM:
    torch.manual_seed(0)
    return CL2CM(visual_dim=12, vocab_size=30, text_hidden=16, text_layers=1, visual_hidden=16, embed_dim=8)


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]])
    tokens = {
        role: {"input_ids": torch.randint(1, 30, (4, 4), generator=g) * mask, "attention_mask": mask}
        for role in ("source", "target")
    }
    return {
        "visual": torch.randn(4, 1, 12, generator=g),
        "visual_mask": torch.ones(4, 1, dtype=torch.bool),
        "visual_index": torch.arange(4),
        "text": tokens,
    }


def test_total_is_the_weighted_sum_and_word_ot_is_non_negative() -> None:
    terms = _model().compute_losses(_batch())
    total = terms["cm_source"] + terms["cm_target"] + terms["sent"] + terms["word"] + terms["kd"]
    assert torch.allclose(terms["loss"], total)
    assert float(terms["word"]) >= 0


def test_relational_teacher_gets_no_gradient_from_distillation() -> None:
    model = _model()
    model.compute_losses(_batch())["kd"].backward()
    assert all(p.grad is None or bool((p.grad == 0).all()) for p in model.lingual_head.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.encoder.visual_head.parameters())


def test_inference_uses_the_cross_modal_network_only() -> None:
    model = _model().eval()
    batch = _batch()
    query = model.encode_queries({"text": {"query": batch["text"]["target"]}})["query"]
    with torch.no_grad():
        model.lingual_head.linear.weight.add_(1.0)
    again = model.encode_queries({"text": {"query": batch["text"]["target"]}})["query"]
    assert torch.equal(query, again) and query.shape == (4, 8)


@pytest.mark.slow
def test_tiny_config_trains_and_tests_through_the_cli(tmp_path, run_cli) -> None:
    from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

    write_synthetic_collection(tmp_path / "data", SynthConfig(n_train=40, n_val=12, n_test=12))
    extra = ("--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--test_after_fit", "true")
    run_cli("fit", experiment("cl2cm"), tmp_path / "data", tmp_path / "run", *extra)
    columns = next((tmp_path / "run").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"train/word", "train/kd", "train/sent", "test/sumr"} <= set(columns)
    assert_consistent_report(written_test_metrics(tmp_path / "run"))
