"""Shared LightningModule machinery of the grounding family (spec grounding_methods §2, §9).

A subclass builds its network and implements ``forward(batch) -> outputs`` with ``logits`` [L, B, Q, 2] and
``spans`` [L, B, Q, 2] (normalised (c, w), one entry per decoder layer, the last is the prediction) and
``saliency`` [B, T]; it may add loss terms (``extra_losses``) and change the ranking score (``scores``). This
base does the set criterion (Hungarian matching per layer; span L1, gIoU, foreground CE; saliency hinge), the
AdamW + StepLR optimiser, the official post-processing and the evaluation loop, which gathers predictions over
ranks in a ``GroundingMetric`` and logs the official keys as ``val/...`` and ``test/...``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from leccr_lightning.losses.spans import (
    Indices,
    foreground_loss,
    hungarian_match,
    negative_pair_loss,
    rank_contrastive_loss,
    saliency_hinge_loss,
    span_cxw_to_xx,
    span_giou_loss,
    span_l1_loss,
)
from leccr_lightning.metrics.grounding import GroundingMetric


def temporal_nms(windows: list[list[float]], threshold: float) -> list[list[float]]:
    """Greedy NMS over score-sorted [st, ed, score] rows: drop a row whose IoU with a kept one is > threshold.

    The IoU divides by the hull, as the official helper (§2.5); the output is a subset of the input.
    """
    kept: list[list[float]] = []
    for row in windows:
        overlaps = (
            max(0.0, min(row[1], k[1]) - max(row[0], k[0])) / max(max(row[1], k[1]) - min(row[0], k[0]), 1e-12)
            for k in kept
        )
        if not any(iou > threshold for iou in overlaps):
            kept.append(row)
    return kept


def postprocess_windows(
    spans: torch.Tensor,
    scores: torch.Tensor,
    duration: float,
    max_ts: float | None = 150.0,
    clip_len: float = 2.0,
    nms_threshold: float = -1.0,
) -> torch.Tensor:
    """Official post-processing of one query (§2.5): (c, w) x duration -> (st, ed), sort by score descending,
    round to 4 decimals, clamp to [0, max_ts] (no clamp when None), round to multiples of ``clip_len`` with
    half-to-even (torch.round), then greedy NMS when ``nms_threshold`` > 0. Returns [K, 3] (st, ed, score)."""
    windows = span_cxw_to_xx(spans.double()) * duration
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    rows = torch.cat([windows[order], scores.double()[order, None]], dim=1)
    rows = torch.round(rows, decimals=4)
    if max_ts is not None:
        rows[:, :2] = rows[:, :2].clamp(0.0, max_ts)
    if clip_len > 0:
        rows[:, :2] = torch.round(rows[:, :2] / clip_len) * clip_len
    if nms_threshold > 0:
        rows = torch.tensor(temporal_nms(rows.tolist(), nms_threshold), dtype=torch.double)
    return rows


def qd_saliency_terms(
    batch: dict[str, Any], saliency: torch.Tensor, saliency_mismatched: torch.Tensor, tau: float = 0.5
) -> dict[str, torch.Tensor]:
    """QD-DETR's extra saliency terms (§2.2): rank-contrastive over the per-clip labels (summed annotator
    scores, or 1 inside the window) against the mismatched-query pass, and the negative-pair term."""
    mask = batch["visual_mask"]
    return {
        "saliency_rank": rank_contrastive_loss(saliency, saliency_mismatched, batch["saliency"], mask, tau),
        "saliency_neg": negative_pair_loss(saliency_mismatched, mask),
    }


class GroundingDETRBase(L.LightningModule):
    """Set criterion, optimiser, post-processing and official evaluation for DETR-style grounding methods.

    Loss weights and matching costs default to Moment-DETR / QD-DETR (§2.1-2.2); the optimiser to the
    QVHighlights recipe (§2.4); post-processing to QVHighlights (clamp 150 s, 2-s rounding, no NMS).
    """

    def __init__(
        self,
        span_loss_coef: float = 10.0,
        giou_loss_coef: float = 1.0,
        label_loss_coef: float = 4.0,
        eos_coef: float = 0.1,
        lw_saliency: float = 1.0,
        saliency_margin: float = 0.2,
        set_cost_span: float = 10.0,
        set_cost_giou: float = 1.0,
        set_cost_class: float = 4.0,
        aux_loss: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        lr_drop: int = 400,
        max_ts: float | None = 150.0,
        pp_clip_len: float = 2.0,
        nms_threshold: float = -1.0,
        metric_clip_len: float = 2.0,
    ) -> None:
        super().__init__()
        self.loss_weights: dict[str, float] = {
            "span": span_loss_coef,
            "giou": giou_loss_coef,
            "label": label_loss_coef,
            "saliency": lw_saliency,
        }
        self.eos_coef, self.saliency_margin, self.aux_loss = eos_coef, saliency_margin, aux_loss
        self.match_costs = {
            "cost_span": set_cost_span,
            "cost_giou": set_cost_giou,
            "cost_class": set_cost_class,
        }
        self.lr, self.weight_decay, self.lr_drop = lr, weight_decay, lr_drop
        self.max_ts, self.pp_clip_len, self.nms_threshold = max_ts, pp_clip_len, nms_threshold
        self.metric_clip_len = metric_clip_len
        self._metrics: dict[str, GroundingMetric] = {}

    def scores(self, outputs: dict[str, Any], layer: int = -1) -> torch.Tensor:
        """Ranking score [B, Q] of a layer's proposals: softmax foreground probability (§2.5)."""
        return outputs["logits"][layer].softmax(-1)[..., 0]

    def match(self, outputs: dict[str, Any], layer: int, targets: list[torch.Tensor]) -> Indices:
        """Hungarian assignment of one decoder layer's queries to the GT spans."""
        return hungarian_match(outputs["logits"][layer], outputs["spans"][layer], targets, **self.match_costs)

    def layer_losses(
        self, outputs: dict[str, Any], layer: int, targets: list[torch.Tensor], indices: Indices
    ) -> dict[str, torch.Tensor]:
        """Span L1, gIoU and foreground CE of one decoder layer (§2.2)."""
        spans, logits = outputs["spans"][layer], outputs["logits"][layer]
        return {
            "span": span_l1_loss(spans, targets, indices),
            "giou": span_giou_loss(spans, targets, indices),
            "label": foreground_loss(logits, indices, self.eos_coef),
        }

    def extra_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Method-specific terms, weighted by ``self.loss_weights[name]``; none in the base."""
        return {}

    def compute_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All named loss terms (auxiliary layers suffixed ``_aux<layer>``) and their weighted sum
        ``loss``."""
        targets = batch["spans"]
        n_layers = outputs["logits"].shape[0]
        layers = range(n_layers) if self.aux_loss else [n_layers - 1]
        terms: dict[str, torch.Tensor] = {}
        for layer in layers:
            suffix = "" if layer == n_layers - 1 else f"_aux{layer}"
            indices = self.match(outputs, layer, targets)
            for name, value in self.layer_losses(outputs, layer, targets, indices).items():
                terms[name + suffix] = value
        terms["saliency"] = saliency_hinge_loss(
            outputs["saliency"], batch["saliency_pos"], batch["saliency_neg"], self.saliency_margin
        )
        terms.update(self.extra_losses(batch, outputs))
        total = sum(self.loss_weights[name.split("_aux")[0]] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch, self(batch))
        size = len(batch["index"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for name, value in losses.items():
            if name != "loss" and "_aux" not in name:
                self.log(f"train/loss_{name}", value, batch_size=size)
        return losses["loss"]

    def predictions(self, batch: dict[str, Any], outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Per query: post-processed ranked windows [K, 3] (seconds) and saliency over the valid clips."""
        scores = self.scores(outputs)
        spans = outputs["spans"][-1]
        lengths = batch["visual_mask"].sum(1).tolist()
        out = []
        for b, duration in enumerate(batch["duration"].tolist()):
            windows = postprocess_windows(
                spans[b], scores[b], duration, self.max_ts, self.pp_clip_len, self.nms_threshold
            )
            out.append({"windows": windows, "saliency": outputs["saliency"][b, : lengths[b]].double()})
        return out

    def _start_eval(self, stage: str, loader: Any) -> None:
        dataset = loader.dataset if hasattr(loader, "dataset") else loader[0].dataset
        metric = GroundingMetric(dataset.ground_truth(), clip_len=self.metric_clip_len)
        self._metrics[stage] = metric.to(self.device)

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        preds = self.predictions(batch, self(batch))
        self._metrics[stage].update(batch["index"], [p["windows"] for p in preds], [p["saliency"] for p in preds])

    def _end_eval(self, stage: str) -> dict[str, float]:
        metric = self._metrics.pop(stage)
        results = metric.compute()
        if "MR-full-R1@0.5" in results:
            results["R1@0.5+R1@0.7"] = round((results["MR-full-R1@0.5"] + results["MR-full-R1@0.7"]) / 2, 3)
        for key, value in results.items():
            self.log(f"{stage}/{key}", torch.tensor(value, dtype=torch.float64), sync_dist=False)
        return results

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val", self.trainer.val_dataloaders)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test", self.trainer.test_dataloaders)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Official submission records ``{qid, query?, vid, pred_relevant_windows, pred_saliency_scores}``."""
        preds = self.predictions(batch, self(batch))
        return [
            {
                "qid": qid,
                "vid": vid,
                "pred_relevant_windows": p["windows"].tolist(),
                "pred_saliency_scores": p["saliency"].tolist(),
            }
            for qid, vid, p in zip(batch["qid"], batch["vid"], preds, strict=True)
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW(lr, weight_decay) with StepLR(lr_drop epochs, gamma 0.1) (§2.4)."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_drop, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
