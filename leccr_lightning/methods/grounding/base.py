"""Shared machinery of the grounding family (spec grounding_methods §2, §9), on ``MethodBase``.

The base owns the input side: the video and query projections (§1.1) and, with ``text_model``, a Hugging Face
text encoder whose token states replace the precomputed query features (``project_inputs``). A subclass takes
``**base_kwargs``, passes them to ``super().__init__`` (LightningCLI resolves them, so every argument stays
configurable from YAML), builds its network and implements ``forward(batch) -> outputs`` with ``logits``
[L, B, Q, 2] and ``spans`` [L, B, Q, 2] (normalised (c, w), one entry per decoder layer, the last is the
prediction) and ``saliency`` [B, T]; it may add loss terms (``extra_losses``, weighted by ``loss_weights``), add a
matching cost (``extra_match_costs``) and change the ranking score (``scores``). The loss is the Moment-DETR set
criterion (``losses.set_criterion.SetCriterion``); optimiser, schedule, gradient clipping and RNG checkpoint state
come from ``MethodBase`` with the Moment-DETR defaults (AdamW lr 1e-4, weight decay 1e-4 on every parameter;
StepLR 400 epochs x 0.1; clip 0.1). The base also does the official post-processing and the evaluation loop: it
gathers the predictions of every rank in a ``GroundingMetric`` and logs the official keys as ``val/...`` and
``test/...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from leccr_lightning.data.grounding.spans import span_cxw_to_xx
from leccr_lightning.losses.set_criterion import SetCriterion, weighted_total
from leccr_lightning.methods.base import MethodBase
from leccr_lightning.metrics.grounding import GroundingMetric
from leccr_lightning.modules.detr import input_projection
from leccr_lightning.modules.text_encoders import HFTextEncoder


def detr_adamw(params: Iterable) -> torch.optim.Optimizer:
    """The Moment-DETR / QD-DETR optimiser: AdamW(lr 1e-4, weight decay 1e-4) (moment_detr/inference.py:201-202)."""
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)


def detr_step_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The Moment-DETR / QD-DETR schedule: x0.1 every 400 epochs (``lr_drop``, moment_detr/inference.py:203)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=400, gamma=0.1)


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


class GroundingDETRBase(MethodBase):
    """Input projections, set criterion, post-processing and official evaluation for DETR-style grounding methods.

    Inputs: ``visual_dim`` (clip feature width, linked from the DataModule), ``hidden_dim``, ``n_input_proj`` and
    ``input_dropout`` (§1.1). Queries come either as precomputed token features of width ``text_dim``
    (``batch["text"]``), or, with ``text_model`` (``"tiny"``: a random-init BERT of ``text_hidden`` /
    ``text_layers`` / ``text_heads`` over ``vocab_size`` tokens, linked from the DataModule; or a local Hugging
    Face directory), as the encoder's token states over ``batch["tokens"]``; ``trainable_layers`` limits
    fine-tuning to those encoder layers (``None``: all). Loss weights and matching costs default to Moment-DETR /
    QD-DETR (§2.1-2.2, ``SetCriterion``); optimisation to the QVHighlights recipe (§2.4): ``optimizer`` AdamW(1e-4,
    weight decay 1e-4), ``scheduler`` StepLR(400, 0.1), ``no_decay_keys=()`` (the official code decays every
    parameter), ``gradient_clip_norm=0.1``; post-processing to QVHighlights (clamp 150 s, 2-s rounding, no NMS).
    ``saliency_fp16`` rounds the predicted saliency to float16 before it is scored or written, as the official
    inference does (moment_detr/inference.py:105, qd_detr/inference.py:196; the rounding creates ties that move
    the highlight metrics slightly); off by default, on in the paper recipes.
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
        max_ts: float | None = 150.0,
        pp_clip_len: float = 2.0,
        nms_threshold: float = -1.0,
        metric_clip_len: float = 2.0,
        saliency_fp16: bool = False,
        optimizer: OptimizerCallable = detr_adamw,
        scheduler: LRSchedulerCallable | None = detr_step_lr,
        scheduler_interval: str = "epoch",
        no_decay_keys: tuple[str, ...] = (),
        gradient_clip_norm: float | None = 0.1,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, no_decay_keys, gradient_clip_norm)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])  # also collects the subclass's arguments
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
        self.criterion = SetCriterion(
            span_loss_coef,
            giou_loss_coef,
            label_loss_coef,
            eos_coef,
            lw_saliency,
            saliency_margin,
            set_cost_span,
            set_cost_giou,
            set_cost_class,
            aux_loss,
        )
        self.loss_weights: dict[str, float] = self.criterion.weights
        self.max_ts, self.pp_clip_len, self.nms_threshold = max_ts, pp_clip_len, nms_threshold
        self.metric_clip_len, self.saliency_fp16 = metric_clip_len, saliency_fp16
        self._metrics: dict[str, GroundingMetric] = {}

    # --- inputs -----------------------------------------------------------------------------------------------
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

    # --- what a method may change -----------------------------------------------------------------------------
    def scores(self, outputs: dict[str, Any], layer: int = -1) -> torch.Tensor:
        """Ranking score [B, Q] of a layer's proposals: softmax foreground probability (§2.5)."""
        return outputs["logits"][layer].softmax(-1)[..., 0]

    def extra_match_costs(self, targets: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
        """Per sample [Q, G_b] costs added to the Hungarian matching cost of every layer; none in the base."""
        return None

    def extra_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Method-specific terms, weighted by ``self.loss_weights[name]``; none in the base."""
        return {}

    # --- training ---------------------------------------------------------------------------------------------
    def compute_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All named loss terms (auxiliary layers suffixed ``_aux<layer>``) and their weighted sum ``loss``."""
        terms = self.criterion(outputs, batch, self.extra_match_costs(batch["spans"]))
        terms.update(self.extra_losses(batch, outputs))
        return {"loss": weighted_total(terms, self.loss_weights), **terms}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch, self(batch))
        self.log_losses(losses, len(batch["index"]))
        return losses["loss"]

    # --- evaluation -------------------------------------------------------------------------------------------
    def predictions(self, batch: dict[str, Any], outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Per query: post-processed ranked windows [K, 3] (seconds) and saliency over the valid clips."""
        scores = self.scores(outputs)
        spans = outputs["spans"][-1]
        lengths = batch["visual_mask"].sum(1).tolist()
        saliency = outputs["saliency"].half() if self.saliency_fp16 else outputs["saliency"]
        out = []
        for b, duration in enumerate(batch["duration"].tolist()):
            windows = postprocess_windows(
                spans[b], scores[b], duration, self.max_ts, self.pp_clip_len, self.nms_threshold
            )
            out.append({"windows": windows, "saliency": saliency[b, : lengths[b]].double()})
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
        """Official submission records ``{qid, vid, pred_relevant_windows, pred_saliency_scores}``."""
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
