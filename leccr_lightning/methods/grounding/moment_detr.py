"""Moment-DETR (Lei et al., NeurIPS 2021), the grounding baseline; spec grounding_methods §1.1, §2.

Video and text features are projected to ``hidden_dim``, encoded jointly ([video; text], sine positions on the
video, none on the text), and decoded by ``num_queries`` learned queries into (c, w) spans and
foreground/background logits; a linear saliency head scores the video part of the encoder memory. The loss is the
base's set criterion (matched span L1 + gIoU, foreground CE, saliency hinge).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from leccr_lightning.methods.grounding.base import GroundingDETRBase
from leccr_lightning.modules.detr import JointEncoder, SpanDecoder


class MomentDETR(GroundingDETRBase):
    """Joint-encoder DETR with learned queries; defaults are the released QVHighlights config (§1.1).

    The input (``visual_dim``, ``text_dim`` or ``text_model``, ``hidden_dim``, ...), loss, matching, optimiser and
    post-processing arguments are ``GroundingDETRBase``'s, passed through ``base_kwargs``.
    """

    def __init__(
        self,
        *,
        nheads: int = 8,
        enc_layers: int = 2,
        dec_layers: int = 2,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_queries: int = 10,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(**base_kwargs)
        d = self.hidden_dim
        self.encoder = JointEncoder(d, nheads, enc_layers, dim_feedforward, dropout)
        self.decoder = SpanDecoder(d, nheads, dec_layers, dim_feedforward, dropout, num_queries, anchor_mode=False)
        self.class_head = nn.Linear(d, 2)  # index 0 = foreground, 1 = no-object
        self.saliency_head = nn.Linear(d, 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``logits`` [L, B, Q, 2], ``spans`` [L, B, Q, 2] (c, w), ``saliency`` [B, T]."""
        video, video_mask, text, text_mask = self.project_inputs(batch)
        memory, mask, pos = self.encoder(video, video_mask, text, text_mask)
        hidden, spans = self.decoder(memory, mask, pos)
        saliency = self.saliency_head(memory[:, : video.shape[1]]).squeeze(-1)
        return {"logits": self.class_head(hidden), "spans": spans, "saliency": saliency}
