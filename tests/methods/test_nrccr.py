"""NRCCR (ccr_methods §2): §2.7 invariants, translate-test fusion, LR schedule, a CLI run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.callbacks.schedules import NRCCRLearningRate
from leccr_lightning.methods.nrccr import NRCCR
from leccr_lightning.modules.attention import SharedTextAttention
from leccr_lightning.modules.discriminator import LanguageDiscriminator
from tests.helpers import assert_consistent_report, experiment, written_test_metrics

VOCAB, BATCH, DIM = 40, 6, 12


def _tokens(generator: torch.Generator, length: int = 7) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (BATCH, length), generator=generator)
    lengths = torch.randint(2, length + 1, (BATCH,), generator=generator)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "visual": torch.randn(BATCH, 1, DIM, generator=g),
        "visual_mask": torch.ones(BATCH, 1, dtype=torch.bool),
        "visual_index": torch.arange(BATCH),
        "text": {role: _tokens(g) for role in ("source", "target", "back")},
        "caption_ids": [f"img{i}#enc#0" for i in range(BATCH)],
    }


def _model(**kwargs) -> NRCCR:
    torch.manual_seed(0)
    args = dict(
        visual_dim=DIM,
        vocab_size=VOCAB,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        attention_heads=2,
        attention_qk_dim=16,
        visual_hidden=16,
        embed_dim=8,
    )
    return NRCCR(**{**args, **kwargs})


def test_similarity_view_teacher_gets_no_gradient() -> None:
    model = _model()
    batch = _batch()
    streams = model.streams(batch)
    streams["teacher"] = streams["teacher"].detach().requires_grad_(True)
    streams["target"] = streams["target"].detach().requires_grad_(True)
    terms = model.loss_terms(streams, batch)
    terms["sim"].backward()
    assert streams["teacher"].grad is None or bool((streams["teacher"].grad == 0).all())
    assert float(streams["target"].grad.abs().sum()) > 0


def test_feature_view_equals_mse_over_eight_and_reaches_teacher() -> None:
    model = _model()
    batch = _batch(1)
    streams = model.streams(batch)
    terms = model.loss_terms(streams, batch)
    expected = F.mse_loss(streams["target"], streams["teacher"]) / 8
    assert torch.allclose(terms["feat"], expected, rtol=1e-5, atol=1e-7)
    teacher = streams["teacher"].detach().requires_grad_(True)
    model.loss_terms({**streams, "teacher": teacher}, batch)["feat"].backward()
    assert float(teacher.grad.abs().sum()) > 0


def test_total_is_the_paper_weighted_sum() -> None:
    model = _model()
    batch = _batch(2)
    terms = model.loss_terms(model.streams(batch), batch)
    total = (
        terms["tri_source"]
        + 0.6 * terms["tri_target"]
        + 0.4 * terms["sim"]
        + 0.1 * terms["feat"]
        + 0.5 * terms["back"]
        + 0.001 * terms["gen"]
    )
    assert torch.allclose(terms["loss"], total)


def test_discriminator_step_changes_only_the_discriminator() -> None:
    model = _model()
    main, disc = model.configure_optimizers()
    disc_ids = {id(p) for p in model.discriminator.parameters()}
    assert not disc_ids & {id(p) for group in main.param_groups for p in group["params"]}
    object.__setattr__(model, "optimizers", lambda: [main, disc])
    object.__setattr__(model, "manual_backward", lambda loss: loss.backward())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = model.compute_losses(_batch(3))
    model.discriminator_step(losses)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("discriminator.") for name in changed)


def test_generator_gradient_reaches_the_text_encoder() -> None:
    model = _model()
    streams = model.streams(_batch(4))
    model.generator_loss(streams["h_target"], streams["mask_target"]).backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.text.parameters())


def test_translate_test_fusion_uses_global_minmax_and_weights() -> None:
    model = _model()
    g = torch.Generator().manual_seed(5)
    queries = {"query": torch.randn(5, 4, generator=g), "translated": torch.randn(5, 4, generator=g)}
    gallery = {"gallery": torch.randn(3, 4, generator=g)}

    def norm(s: torch.Tensor) -> torch.Tensor:
        return (s - s.min()) / (s.max() - s.min())

    for stage, w in (("val", 0.2), ("test", 0.5)):
        scorer = model.scorer(stage).fit(queries, gallery, chunk_size=2)
        expected = w * norm(queries["translated"] @ gallery["gallery"].T) + (1 - w) * norm(
            queries["query"] @ gallery["gallery"].T
        )
        assert torch.allclose(scorer(queries, gallery), expected, atol=1e-6)
    plain = _model(translate_weight_test=0.0).scorer("test")
    assert torch.equal(plain(queries, gallery), queries["query"] @ gallery["gallery"].T)


def test_encode_queries_without_translations_is_a_clear_error() -> None:
    model = _model().eval()
    batch = {"text": {"query": _tokens(torch.Generator().manual_seed(6))}}
    with pytest.raises(ValueError, match="query_roles"):
        model.encode_queries(batch)


def test_attention_ignores_padding_and_cross_mode_has_no_residual() -> None:
    torch.manual_seed(0)
    head = SharedTextAttention(16, num_heads=2, qk_dim=16).eval()
    q, k = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    q_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    k_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    k_changed = k.clone()
    k_changed[0, 2:] = 100.0
    cross, cross_changed = head(q, q_mask, k, k_mask), head(q, q_mask, k_changed, k_mask)
    assert torch.allclose(cross[0, :3], cross_changed[0, :3], atol=1e-5)
    q_changed = q.clone()
    q_changed[0, 3:] = 50.0
    assert torch.allclose(head(q, q_mask)[0, :3], head(q_changed, q_mask)[0, :3], atol=1e-5)
    expected_cross = head.out_norm(head.dense(_context(head, q, k, k_mask)))
    valid = q_mask.bool()
    assert torch.allclose(cross[valid], expected_cross[valid], atol=1e-5)


def _context(head: SharedTextAttention, q: torch.Tensor, k: torch.Tensor, k_mask: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_v_head)) V over the valid keys, heads concatenated (cross-mode reference)."""
    b, lq, _ = q.shape
    heads = head.num_heads
    qh = head.query(q).view(b, lq, heads, -1).transpose(1, 2)
    kh = head.key(k).view(b, k.shape[1], heads, -1).transpose(1, 2)
    vh = head.value(k).view(b, k.shape[1], heads, -1).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / vh.shape[-1] ** 0.5
    scores = scores.masked_fill(~k_mask.bool()[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, lq, -1)


@pytest.mark.parametrize("kind", ["not-so-weak", "strong"])
def test_discriminator_shapes_and_bad_kind(kind: str) -> None:
    disc = LanguageDiscriminator(16, kind)
    assert disc(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)).shape == (3, 2)
    with pytest.raises(ValueError, match="discriminator kind"):
        LanguageDiscriminator(16, "weak")


def test_learning_rate_decays_and_halves_on_plateau() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    callback = NRCCRLearningRate(halve_every=3)
    trainer = SimpleNamespace(optimizers=[optimizer], sanity_checking=False, callback_metrics={}, current_epoch=0)
    lrs = []
    for epoch, sumr in enumerate([10.0, 12.0, 11.0, 11.0, 11.0, 11.0]):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/sumr": torch.tensor(sumr)}
        callback.on_validation_epoch_end(trainer, None)
        lrs.append(optimizer.param_groups[0]["lr"])
    d = 0.99
    assert lrs == pytest.approx([d, d**2, d**3, 0.5 * d**4, 0.5 * d**5, 0.5 * d**6])
    assert callback.state_dict() == {"best": 12.0, "last_halving": 3}


@pytest.mark.slow
def test_tiny_config_trains_and_tests_through_the_cli(tmp_path, run_cli) -> None:
    from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

    write_synthetic_collection(tmp_path / "data", SynthConfig(n_train=40, n_val=12, n_test=12))
    extra = ("--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--test_after_fit", "true")
    run_cli("fit", experiment("nrccr"), tmp_path / "data", tmp_path / "run", *extra)
    logged = (tmp_path / "run").rglob("metrics.csv")
    columns = set(next(logged).read_text().splitlines()[0].split(","))
    assert {"train/sim", "train/feat", "train/back", "train/gen", "train/disc", "test/sumr"} <= columns
    assert_consistent_report(written_test_metrics(tmp_path / "run"))
