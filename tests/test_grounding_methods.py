"""Span utilities, matcher, losses, post-processing, and Moment-DETR / RGTR / CDNet learning the synthetic
task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from leccr_lightning.callbacks.grounding_writer import GroundingPredictionWriter
from leccr_lightning.data.grounding import GroundingDataModule
from leccr_lightning.data.grounding_synthetic import write_grounding_collection
from leccr_lightning.losses.spans import (
    foreground_loss,
    generalized_temporal_iou,
    hungarian_match,
    iou_targets,
    rank_contrastive_loss,
    saliency_hinge_loss,
    span_cxw_to_xx,
    span_giou_loss,
    span_l1_loss,
    span_xx_to_cxw,
    temporal_iou,
    temporal_iou_paired,
)
from leccr_lightning.methods.cdnet import CDNet
from leccr_lightning.methods.grounding_base import postprocess_windows, temporal_nms
from leccr_lightning.methods.moment_detr import MomentDETR
from leccr_lightning.methods.rgtr import RGTR
from leccr_lightning.metrics.grounding import grounding_report

TINY = {
    "hidden_dim": 32,
    "nheads": 4,
    "dim_feedforward": 64,
    "input_dropout": 0.1,
    "lr": 3e-3,
    "lr_drop": 1000,
}


def test_span_conversions_and_iou_invariants() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.sort(torch.rand(6, 2, generator=gen), dim=1).values
    b = torch.sort(torch.rand(5, 2, generator=gen), dim=1).values
    assert torch.allclose(span_cxw_to_xx(span_xx_to_cxw(a)), a)
    iou, _ = temporal_iou(a, b)
    assert torch.allclose(iou, temporal_iou(b, a)[0].T) and (iou >= 0).all() and (iou <= 1).all()
    assert torch.allclose(torch.diag(temporal_iou(a, a)[0]), torch.ones(6))
    assert torch.allclose(
        temporal_iou_paired(a, a[[1, 0, 2, 3, 4, 5]]), torch.diag(temporal_iou(a, a[[1, 0, 2, 3, 4, 5]])[0])
    )
    giou = generalized_temporal_iou(a, b)
    assert (giou >= -1).all() and (giou <= 1).all()
    overlap = iou > 0
    assert torch.allclose(giou[overlap], iou[overlap])
    gap = generalized_temporal_iou(torch.tensor([[0.0, 0.2]]), torch.tensor([[0.5, 1.0]]))
    assert gap.item() == pytest.approx(-0.3 / 1.0)
    assert temporal_iou(torch.tensor([[0.3, 0.3]]), torch.tensor([[0.3, 0.3]]))[0].item() == 0.0


def test_matcher_pairs_and_permutation() -> None:
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.2], [0.5, 0.9], [0.1, 0.05]]])
    logits = torch.tensor([[[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    gt = torch.tensor([[0.7, 0.2], [0.2, 0.1]])
    ((rows, cols),) = hungarian_match(logits, spans, [gt])
    assert len(rows) == 2 and len(set(rows.tolist())) == 2
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 1, 1: 0}
    ((rows_p, cols_p),) = hungarian_match(logits, spans, [gt.flip(0)])
    assert dict(zip(cols_p.tolist(), rows_p.tolist(), strict=True)) == {0: 0, 1: 1}
    ((rows_e, _),) = hungarian_match(logits, spans, [torch.zeros(0, 2)])
    assert len(rows_e) == 0


def test_losses_invariants() -> None:
    spans = torch.tensor([[[0.5, 0.2], [0.3, 0.1]]])
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    target = [torch.tensor([[0.5, 0.2]])]
    assert span_l1_loss(spans, target, indices).item() == 0.0
    assert span_giou_loss(spans, target, indices).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([0, 1]), reduction="none")
    expected = (ce[0] * 1.0 + ce[1] * 0.1) / 1.1
    assert foreground_loss(logits, indices, eos_coef=0.1).item() == pytest.approx(expected.item())
    sal = torch.tensor([[1.0, 0.7, 0.0, 0.5]])
    assert saliency_hinge_loss(sal, torch.tensor([[0, 0]]), torch.tensor([[2, 3]]), margin=0.2).item() == 0.0
    assert saliency_hinge_loss(sal, torch.tensor([[1, 1]]), torch.tensor([[3, 3]]), 0.3).item() == pytest.approx(0.2)
    mask = torch.ones(2, 4, dtype=torch.bool)
    labels = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    scores = torch.randn(2, 4, requires_grad=True)
    loss = rank_contrastive_loss(scores, torch.randn(2, 4), labels, mask)
    loss.backward()
    assert torch.isfinite(loss) and scores.grad[0].abs().sum() == 0 and scores.grad[1].abs().sum() > 0
    pred = torch.tensor([[[0.5, 0.2], [0.9, 0.1]]], requires_grad=True)
    target_iou = iou_targets(pred, target)
    assert not target_iou.requires_grad and target_iou[0, 0] == 1.0 and ((target_iou >= 0) & (target_iou <= 1)).all()


def test_postprocess_and_nms() -> None:
    spans = torch.tensor([[0.5, 0.2], [0.1, 0.4], [0.95, 0.3]])
    rows = postprocess_windows(spans, torch.tensor([0.2, 0.9, 0.5]), duration=150.0, max_ts=150.0, clip_len=2.0)
    assert rows[:, 2].tolist() == [0.9, 0.5, 0.2]
    assert rows[0, :2].tolist() == [0.0, 44.0] and rows[1, 1].item() == 150.0  # 45 s / 2 = 22.5 -> 22 (even)
    assert torch.equal(torch.remainder(rows[:, :2], 2.0), torch.zeros(3, 2))
    half = postprocess_windows(torch.tensor([[0.5, 0.1]]), torch.tensor([1.0]), duration=10.0, clip_len=1.0)
    assert half[0, :2].tolist() == [4.0, 6.0]
    tie = postprocess_windows(torch.tensor([[0.25, 0.1]]), torch.tensor([1.0]), duration=10.0, clip_len=1.0)
    assert tie[0, :2].tolist() == [2.0, 3.0]
    windows = [[0.0, 10.0, 0.9], [1.0, 10.0, 0.8], [20.0, 30.0, 0.7]]
    kept = temporal_nms(windows, 0.5)
    assert kept == [windows[0], windows[2]] and all(k in windows for k in kept)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grounding_collection(tmp_path_factory.mktemp("gsyn"), seed=0, n_queries=(256, 8, 64))


def _datamodule(root: Path) -> GroundingDataModule:
    return GroundingDataModule(
        root=str(root),
        train_file="annotations/highlight_train_release.jsonl",
        val_file="annotations/highlight_val_release.jsonl",
        test_file="annotations/highlight_test_release.jsonl",
        video_feature_dirs=["features/video_a", "features/video_b"],
        batch_size=16,
        eval_batch_size=64,
    )


def _trainer(root: Path, epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=0.1,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1000,
        default_root_dir=str(root),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "extra"),
    [
        (MomentDETR, {}),
        (RGTR, {"t2v_layers": 1, "enc_layers": 1}),
        (CDNet, {"t2v_layers": 1, "enc_layers": 1}),
    ],
)
def test_method_learns_synthetic_task(synthetic: Path, tmp_path: Path, method, extra: dict) -> None:
    L.seed_everything(0)
    dm = _datamodule(synthetic)
    model = method(dm.visual_dim, dm.text_dim, **TINY, **extra)
    before = _trainer(tmp_path, 1).test(model, datamodule=dm, verbose=False)[0]
    trainer = _trainer(tmp_path, 15)
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert after["test/MR-full-mAP"] > before["test/MR-full-mAP"] + 10
    assert after["test/MR-full-R1@0.5"] > before["test/MR-full-R1@0.5"] + 10
    assert after["test/HL-min-Fair-Hit1"] > before["test/HL-min-Fair-Hit1"]
    if method is RGTR:
        state = model.state_dict()
        restored = RGTR(dm.visual_dim, dm.text_dim, **TINY, **extra)
        assert not bool(restored.anchors_ready)
        restored.load_state_dict(state)
        assert bool(restored.anchors_ready) and torch.equal(restored.static_anchors, model.static_anchors)
        assert not torch.equal(model.static_anchors, RGTR(dm.visual_dim, dm.text_dim, **TINY).static_anchors)


@pytest.mark.slow
def test_cli_fit_test_then_predict_writer(synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leccr_lightning.cli import main

    monkeypatch.setattr(sys, "argv", ["leccr"])
    common = [
        "--config",
        "configs/experiments/moment_detr/tiny.yaml",
        "--data.init_args.root",
        str(synthetic),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.max_epochs",
        "2",
    ]
    main(["fit", *common, "--test_after_fit", "true"])
    metrics = json.loads(next(tmp_path.rglob("test_metrics.json")).read_text())
    for key in (
        "MR-full-R1@0.5",
        "MR-full-R1@0.7",
        "MR-full-mAP",
        "MR-full-mAP@0.75",
        "HL-min-VeryGood-Hit1",
    ):
        assert f"test/{key}" in metrics
    ckpt = next(tmp_path.rglob("last.ckpt"))
    model = MomentDETR.load_from_checkpoint(ckpt, weights_only=False)
    writer = GroundingPredictionWriter(output_dir=str(tmp_path), filename="hl_test_submission.jsonl")
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False)
    trainer.predict(model, datamodule=_datamodule(synthetic), return_predictions=False)
    submission = [
        json.loads(line) for line in next(tmp_path.rglob("hl_test_submission.jsonl")).read_text().splitlines()
    ]
    gt = [
        json.loads(line) for line in (synthetic / "annotations/highlight_test_release.jsonl").read_text().splitlines()
    ]
    assert sorted(d["qid"] for d in submission) == sorted(d["qid"] for d in gt)
    assert all(len(d["pred_relevant_windows"]) == 10 for d in submission)
    rescored = grounding_report(submission, gt)
    assert rescored["MR-full-mAP"] == pytest.approx(metrics["test/MR-full-mAP"], abs=0.011)
