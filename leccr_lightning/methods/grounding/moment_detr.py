"""Moment-DETR (Lei et al., NeurIPS 2021), the grounding baseline; spec grounding_methods §1.1, §2.

Video and text features are projected to ``hidden_dim`` and encoded jointly ([video; text], sine positions on the
video, none on the text); ``num_queries`` learned query positions decode the memory into (c, w) spans
(sigmoid(MLP(h))) and foreground/background logits; a linear head scores the saliency of the video part of the
memory. The loss is the base's set criterion: matched span L1 + gIoU, foreground CE, saliency hinge (eq. 2-4 of the
paper; jayleicn/moment_detr:moment_detr/model.py:80-137 for the forward pass).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from leccr_lightning.methods.grounding.base import GroundingDETRBase
from leccr_lightning.modules.detr import MLP, JointEncoder, QueryDecoder


class MomentDETR(GroundingDETRBase):
    """Joint-encoder DETR with learned queries; defaults are the released QVHighlights config (§1.1).

    The input (``visual_dim``, ``text_dim`` or ``text_model``, ``hidden_dim``, ...), loss, matching, optimiser and
    post-processing arguments are ``GroundingDETRBase``'s, passed through ``base_kwargs``.

    Differences from the official code (jayleicn/moment_detr @ b7e553a), each with the flag that reproduces
    upstream where there is one:

    - Span targets are the GT windows divided by the annotated duration, which inference multiplies by; upstream
      divides by the feature length (moment_detr/start_end_dataset.py:164) and multiplies by the duration
      (moment_detr/inference.py:122). Flag: the DataModule's ``span_normaliser="features"`` (paper recipes).
    - The predicted saliency is scored and written in float32; upstream rounds it to float16
      (moment_detr/inference.py:105). Flag: ``saliency_fp16=True`` (paper recipes).
    - The clips of a window-only annotation (Charades-STA, TACoS) are counted with the configured clip length, as
      upstream's own code (qd_detr/start_end_dataset.py:125-126); the DETR family's Charades-STA / TACoS code uses
      duration / n_clips (wjun0830/CGDETR:cg_detr/start_end_dataset.py:227). Flag: the DataModule's
      ``window_clips_from="duration"`` (the Charades-STA and TACoS recipes).
    - The random training targets (at most ``max_windows`` shuffled windows, the random hinge clips) come from a
      generator seeded per (seed, epoch, query) instead of Python's global ``random``
      (moment_detr/start_end_dataset.py:144-145, 161): the same distributions, other draws, exact resumption. No
      flag: upstream's stream depends on the data-loader workers.
    - Hard-pair ties are resolved by a stable argsort (the last of the highest clips, the first of the lowest), as
      upstream's ``np.argsort`` (start_end_dataset.py:132) does under its numpy 1.17.4 for up to 16 relevant clips;
      for longer moments numpy 1.17's introsort orders ties its own way. No flag: that order cannot be reproduced
      with the numpy of this package.
    - A relevant clip id past the video's feature rows (features a row short) is left out of the easy-positive
      pool and of the rank labels; upstream can index past the video there (start_end_dataset.py:144). No flag.
    - A query without relevant clips, or (window-only) without 2 clips outside its window, gets a constant hinge
      term where upstream raises; CG-DETR's fallback to the positives is kept (cg_detr/start_end_dataset.py:242-245).
    - gIoU is computed in the spans' dtype; upstream casts it to float32 (span_utils.py:110-111), which differs only
      for float64 inputs. No flag.
    - Not implemented, off in every official recipe: the contrastive alignment loss (``contrastive_align_loss``), the
      classification span head (``span_loss_type="ce"``), text positions (``use_txt_pos``), pre-norm layers
      (``pre_norm``), query-token dropout (``txt_drop_ratio``) and ASR pre-training (``subs_train``).
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
        self.decoder = QueryDecoder(d, nheads, dec_layers, dim_feedforward, dropout)
        self.query_embed = nn.Embedding(num_queries, d)  # learned query positions, N(0, 1) (model.py:58)
        self.class_head = nn.Linear(d, 2)  # index 0 = foreground, 1 = no-object
        self.span_head = MLP(d, d, 2, 3)
        self.saliency_head = nn.Linear(d, 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``logits`` [L, B, Q, 2], ``spans`` [L, B, Q, 2] (c, w), ``saliency`` [B, T]."""
        video, video_mask, text, text_mask = self.project_inputs(batch)
        memory, mask, pos = self.encoder(video, video_mask, text, text_mask)
        hidden = self.decoder(self.query_embed.weight, memory, mask, pos)
        saliency = self.saliency_head(memory[:, : video.shape[1]]).squeeze(-1)
        return {"logits": self.class_head(hidden), "spans": self.span_head(hidden).sigmoid(), "saliency": saliency}
