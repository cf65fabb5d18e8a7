"""Shared LightningModule machinery of the grounding family (spec grounding_methods §2, §9).

The base owns the input side: the video and query projections (§1.1) and, with ``text_model``, a Hugging Face
text encoder whose token states replace the precomputed query features (``project_inputs``). A subclass takes
``**base_kwargs``, passes them to ``super().__init__`` (LightningCLI resolves them, so every argument stays
configurable from YAML), builds its network and implements ``forward(batch) -> outputs`` with ``logits``
[L, B, Q, 2] and ``spans`` [L, B, Q, 2] (normalised (c, w), one entry per decoder layer, the last is the
prediction) and ``saliency`` [B, T]; it may add loss terms (``extra_losses``) and change the ranking score
(``scores``). This base does the set criterion (Hungarian matching per layer; span L1, gIoU, foreground CE;
saliency hinge), the AdamW + StepLR optimiser, the official post-processing and the evaluation loop, which
gathers predictions over ranks in a ``GroundingMetric`` and logs the official keys as ``val/...`` and
``test/...``.
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
from leccr_lightning.modules.detr import input_projection
from leccr_lightning.modules.text_encoders import HFTextEncoder


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
    """Input projections, set criterion, optimiser, post-processing and official evaluation for DETR-style
    grounding methods.

    Inputs: ``visual_dim`` (clip feature width, linked from the DataModule), ``hidden_dim``, ``n_input_proj``
    and ``input_dropout`` (§1.1). Queries come either as precomputed token features of width ``text_dim``
    (``batch["text"]``), or, with ``text_model`` (``"tiny"``: a random-init BERT of ``text_hidden`` /
    ``text_layers`` / ``text_heads`` over ``vocab_size`` tokens, linked from the DataModule; or a local Hugging
    Face directory), as the encoder's token states over ``batch["tokens"]``; ``trainable_layers`` limits
    fine-tuning to those encoder layers (``None``: all). Loss weights and matching costs default to
    Moment-DETR / QD-DETR (§2.1-2.2); the optimiser to the QVHighlights recipe (§2.4); post-processing to
    QVHighlights (clamp 150 s, 2-s rounding, no NMS).
    """

    def __init__(
        self,
        visual_dim: int,
        text_dim: int | None = None,
        hidden_dim: int = 256,
        n_input_proj: int = 2,
        input_dropout: float = 0.5,
        text_model: str | None = None,
        vocab_size: int | None = None,
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        trainable_layers: list[int] | None = None,
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
        self.save_hyperparameters()  # also collects the calling subclass's arguments
        if (text_model is None) == (text_dim is None):
            raise ValueError(
                "set exactly one of model.init_args.text_dim (precomputed query token features) and "
                f"model.init_args.text_model (a text encoder over tokenised queries); got text_dim={text_dim}, "
                f"text_model={text_model!r}"
            )
        self.text_encoder: HFTextEncoder | None = None
        if text_model is not None:
            self.text_encoder = HFTextEncoder(
                text_model, vocab_size, text_hidden, text_layers, text_heads, trainable_layers=trainable_layers
            )
            text_dim = self.text_encoder.hidden_size
        self.hidden_dim = hidden_dim
        self.video_proj = input_projection(visual_dim, hidden_dim, n_input_proj, input_dropout)
        self.text_proj = input_projection(text_dim, hidden_dim, n_input_proj, input_dropout)
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

    def query_tokens(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query token features [B, Lq, D_t] and their mask [B, Lq]: the text encoder's states of
        ``batch["tokens"]`` with ``text_model``, else the precomputed ``batch["text"]``."""
        key = "tokens" if self.text_encoder is not None else "text"
        if key not in batch:
            served = "precomputed query features" if key == "tokens" else "tokenised queries"
            wanted = (
                "data.init_args.tokenizer ('train' or a local tokenizer directory)"
                if key == "tokens"
                else "data.init_args.text_feature_dir"
            )
            raise ValueError(
                f"{type(self).__name__} reads batch[{key!r}] but the DataModule serves only {served} "
                f"(qids {batch['qid'][:3]}...); set {wanted}"
            )
        if self.text_encoder is None:
            return batch["text"], batch["text_mask"]
        tokens = batch["tokens"]
        states, _ = self.text_encoder(tokens["input_ids"], tokens["attention_mask"])
        return states, tokens["attention_mask"].bool()

    def project_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected clips [B, T, d], their mask, projected query tokens [B, Lq, d] and their mask (§1.1)."""
        text, text_mask = self.query_tokens(batch)
        return self.video_proj(batch["visual"]), batch["visual_mask"], self.text_proj(text), text_mask

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
