"""QD-DETR: query-dependent video representation (Moon et al., CVPR 2023); spec grounding_methods §1.2, §2.2.

Clip features attend to the query tokens first (T2V cross-attention, video as queries, text as keys and values),
so the video representation depends on the query; self-attention then runs over [global token; clips] without the
text. Saliency is s_i = <P1 v_i, P2 g> / sqrt(d) with g the global token. Negative pairs: each video is encoded a
second time with another sample's query, and the saliency s^- of that mismatched pass is pushed down
(negative-pair loss) and contrasted in the rank-contrastive loss. Moments are decoded from ``num_queries``
learnable (c, w) anchors refined layer by layer in inverse-sigmoid space (DAB-DETR).

RGTR and CDNet subclass this class: ``encode`` (video and query -> memory and saliency) and ``decode`` (memory ->
logits and spans) are the two stages they change, ``init_queries``/``anchor_queries`` the anchors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leccr_lightning.losses.spans import negative_pair_loss, rank_contrastive_loss
from leccr_lightning.methods.grounding.base import GroundingDETRBase
from leccr_lightning.modules.detr import GlobalSaliencyHead, SpanDecoder, T2VEncoder


class QDDETR(GroundingDETRBase):
    """T2V encoder + global-token saliency + negative pairs + anchor decoder; defaults are the released
    QVHighlights config (§1.2: 2 T2V, 2 encoder and 2 decoder layers, 10 anchors, rank-contrastive tau 0.5).

    The decoder is the shared DAB-style ``SpanDecoder`` (query position = MLP(sine(anchor)), refinement detached
    between layers); QD-DETR's content-conditioned scaling of the sine embedding (``cond_elewise``),
    width-modulated positional attention and PReLU are not reproduced. The input, loss, matching, optimiser and
    post-processing arguments are ``GroundingDETRBase``'s, passed through ``base_kwargs``.
    """

    def __init__(
        self,
        *,
        nheads: int = 8,
        t2v_layers: int = 2,
        enc_layers: int = 2,
        dec_layers: int = 2,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_queries: int = 10,
        rank_tau: float = 0.5,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(**base_kwargs)
        lw_saliency = self.loss_weights["saliency"]  # QD-DETR sums its three saliency terms under lw_saliency
        self.loss_weights.update({"saliency_rank": lw_saliency, "saliency_neg": lw_saliency})
        d = self.hidden_dim
        self.encoder = T2VEncoder(d, nheads, t2v_layers, enc_layers, dim_feedforward, dropout)
        self.saliency_head = GlobalSaliencyHead(d)
        self.init_queries(num_queries)
        self.decoder = SpanDecoder(d, nheads, dec_layers, dim_feedforward, dropout, num_queries, anchor_mode=True)
        self.class_head = nn.Linear(d, 2)  # index 0 = foreground, 1 = no-object

    # --- anchors ----------------------------------------------------------------------------------------------
    def init_queries(self, num_queries: int) -> None:
        """The decoder's queries: ``num_queries`` learnable unsigmoided (c, w) anchors."""
        self.anchors = nn.Embedding(num_queries, 2)

    def anchor_queries(self, batch_size: int) -> torch.Tensor:
        """Unsigmoided (c, w) anchors [B, Q, 2] the decoder starts from."""
        return self.anchors.weight.expand(batch_size, -1, -1)

    # --- the two stages ---------------------------------------------------------------------------------------
    def encode(
        self, video: torch.Tensor, video_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``memory`` [B, 1 + T, d] (global token first), its ``mask`` and positions ``pos``, ``saliency`` [B, T]."""
        memory, mask, pos = self.encoder(video, video_mask, text, text_mask)
        return {"memory": memory, "mask": mask, "pos": pos, "saliency": self.saliency_head(memory)}

    def decode(self, encoded: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        """``logits`` and ``spans`` [L, B, Q, 2] from the anchors attending to the memory."""
        anchors = self.anchor_queries(batch_size)
        hidden, spans = self.decoder(encoded["memory"], encoded["mask"], encoded["pos"], anchors=anchors)
        return {"logits": self.class_head(hidden), "spans": spans}

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``logits``/``spans`` [L, B, Q, 2], ``saliency`` [B, T] (and what ``encode`` adds); in training also
        ``saliency_mismatched`` [B, T], the saliency of each video under its batch neighbour's query."""
        video, video_mask, text, text_mask = self.project_inputs(batch)
        encoded = self.encode(video, video_mask, text, text_mask)
        out = self.decode(encoded, video.shape[0])
        out.update({k: v for k, v in encoded.items() if k not in ("memory", "mask", "pos")})
        if self.training:
            mismatched = self.encode(video, video_mask, text.roll(1, 0), text_mask.roll(1, 0))
            out["saliency_mismatched"] = mismatched["saliency"]
        return out

    def extra_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Rank-contrastive over the per-clip labels (summed annotator scores, or 1 inside the window) against the
        mismatched pass, and the negative-pair term (§2.2), both weighted by ``lw_saliency``."""
        mask, labels = batch["visual_mask"], batch["saliency"]
        saliency, mismatched = outputs["saliency"], outputs["saliency_mismatched"]
        return {
            "saliency_rank": rank_contrastive_loss(saliency, mismatched, labels, mask, self.hparams.rank_tau),
            "saliency_neg": negative_pair_loss(mismatched, mask),
        }
