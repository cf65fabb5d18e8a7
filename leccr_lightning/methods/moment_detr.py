"""Moment-DETR (Lei et al., NeurIPS 2021), the grounding baseline; spec grounding_methods §1.1, §2.

Video and text features are projected to ``hidden_dim``, encoded jointly ([video; text], sine positions on
the video, none on the text), and decoded by ``num_queries`` learned queries into (c, w) spans and
foreground/background logits; a linear saliency head scores the video part of the encoder memory.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from leccr_lightning.methods.grounding_base import GroundingDETRBase
from leccr_lightning.modules.detr import JointEncoder, SpanDecoder, input_projection


class MomentDETR(GroundingDETRBase):
    """Joint-encoder DETR with learned queries; defaults are the released QVHighlights config (§1.1).

    The loss, matching, optimiser and post-processing arguments are ``GroundingDETRBase``'s.
    """

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 2,
        dec_layers: int = 2,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        n_input_proj: int = 2,
        num_queries: int = 10,
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
        super().__init__(
            span_loss_coef=span_loss_coef,
            giou_loss_coef=giou_loss_coef,
            label_loss_coef=label_loss_coef,
            eos_coef=eos_coef,
            lw_saliency=lw_saliency,
            saliency_margin=saliency_margin,
            set_cost_span=set_cost_span,
            set_cost_giou=set_cost_giou,
            set_cost_class=set_cost_class,
            aux_loss=aux_loss,
            lr=lr,
            weight_decay=weight_decay,
            lr_drop=lr_drop,
            max_ts=max_ts,
            pp_clip_len=pp_clip_len,
            nms_threshold=nms_threshold,
            metric_clip_len=metric_clip_len,
        )
        self.save_hyperparameters()
        self.video_proj = input_projection(visual_dim, hidden_dim, n_input_proj, input_dropout)
        self.text_proj = input_projection(text_dim, hidden_dim, n_input_proj, input_dropout)
        self.encoder = JointEncoder(hidden_dim, nheads, enc_layers, dim_feedforward, dropout)
        self.decoder = SpanDecoder(
            hidden_dim, nheads, dec_layers, dim_feedforward, dropout, num_queries, anchor_mode=False
        )
        self.class_head = nn.Linear(hidden_dim, 2)  # index 0 = foreground, 1 = no-object
        self.saliency_head = nn.Linear(hidden_dim, 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``logits`` [L, B, Q, 2], ``spans`` [L, B, Q, 2] (c, w), ``saliency`` [B, T]."""
        video = self.video_proj(batch["visual"])
        text = self.text_proj(batch["text"])
        memory, mask, pos = self.encoder(video, batch["visual_mask"], text, batch["text_mask"])
        hidden, spans = self.decoder(memory, mask, pos)
        saliency = self.saliency_head(memory[:, : video.shape[1]]).squeeze(-1)
        return {"logits": self.class_head(hidden), "spans": spans, "saliency": saliency}
