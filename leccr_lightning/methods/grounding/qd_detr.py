"""QD-DETR: query-dependent video representation (Moon et al., CVPR 2023); spec grounding_methods §1.2, §2.2.

Clip features attend to the query tokens first (T2V cross-attention: video as queries, text as keys and values),
so the video representation depends on the query; self-attention then runs over [global token; clips] without the
text. Saliency is s_i = <P1 v_i, P2 g> / sqrt(d) with g the global token's memory. Negative pairs: each video is
encoded a second time with the next sample's query, and the saliency s^- of that mismatched pass is pushed down
(negative-pair loss) and contrasted in the rank-contrastive loss. Moments are decoded from ``num_queries``
learnable (c, w) anchors by the DAB-DETR decoder, refined layer by layer in inverse-sigmoid space; a layer's span
is sigmoid(MLP(h_l) + inverse_sigmoid(r_l)) of its reference r_l (wjun0830/QD-DETR:qd_detr/model.py:90-187).

RGTR and CDNet subclass this class: ``encode`` (video and query -> clip memory, global token and saliency) and
``decode`` (memory -> logits and spans) are the two stages they change, ``init_queries``/``anchor_queries`` the
anchors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leccr_lightning.losses.spans import negative_pair_loss, rank_contrastive_loss
from leccr_lightning.methods.grounding.base import GroundingDETRBase
from leccr_lightning.modules.detr import MLP, AnchorDecoder, GlobalSaliencyHead, T2VEncoder, inverse_sigmoid

ENCODER_STATE = ("memory", "mask", "pos", "global")


class QDDETR(GroundingDETRBase):
    """T2V encoder + global-token saliency + negative pairs + DAB anchor decoder; defaults are the released
    QVHighlights config (§1.2: 2 T2V, 2 encoder and 2 decoder layers, 10 anchors, PReLU, rank-contrastive tau 0.5).

    The input, loss, matching, optimiser and post-processing arguments are ``GroundingDETRBase``'s, passed through
    ``base_kwargs``; ``lw_saliency`` weighs the hinge, rank-contrastive and negative-pair terms alike
    (model.py:359).

    Differences from the official code (wjun0830/QD-DETR @ 56c63b2), each with the flag that reproduces upstream
    where there is one (line numbers of qd_detr/ files unless a repository is named):

    - Span targets are the GT windows divided by the annotated duration, which inference multiplies by; upstream
      divides by the feature length (start_end_dataset.py:260) and multiplies by the duration
      (inference.py:213). Flag: the DataModule's ``span_normaliser="features"`` (paper recipes).
    - The predicted saliency is scored and written in float32; upstream rounds it to float16
      (qd_detr/inference.py:196). Flag: ``saliency_fp16=True`` (paper recipes).
    - The clips of a window-only annotation (Charades-STA, TACoS) are counted with the configured clip length, as
      upstream's own code (qd_detr/start_end_dataset.py:125-126); the DETR family's Charades-STA / TACoS code uses
      duration / n_clips (wjun0830/CGDETR:cg_detr/start_end_dataset.py:227). Flag: the DataModule's
      ``window_clips_from="duration"`` (the Charades-STA and TACoS recipes).
    - The random training targets (at most ``max_windows`` shuffled windows, the random hinge clips) come from a
      generator seeded per (seed, epoch, query) instead of Python's global ``random``
      (qd_detr/start_end_dataset.py:216-217, 257): the same distributions, other draws, exact resumption. No
      flag: upstream's stream depends on the data-loader workers.
    - Hard-pair ties are resolved by a stable argsort (the last of the highest clips, the first of the lowest), as
      upstream's ``np.argsort`` (start_end_dataset.py:193) does under its numpy 1.17.4 for up to 16 relevant clips;
      for longer moments numpy 1.17's introsort orders ties its own way. No flag: that order cannot be reproduced
      with the numpy of this package.
    - A relevant clip id past the video's feature rows (features a row short) is left out of the easy-positive
      pool and of the rank labels; upstream can index past the video there (start_end_dataset.py:197-204, 216). No flag.
    - A query without relevant clips, or (window-only) without 2 clips outside its window, gets a constant hinge
      term where upstream raises; CG-DETR's fallback to the positives is kept (cg_detr/start_end_dataset.py:242-245).
    - gIoU is computed in the spans' dtype; upstream casts it to float32 (span_utils.py:110-111), which differs only
      for float64 inputs. No flag.
    - Not implemented, off in every official recipe: the contrastive alignment loss (``contrastive_align_loss``), the
      classification span head (``span_loss_type="ce"``), text positions (``use_txt_pos``), pre-norm layers
      (``pre_norm``), query-token dropout (``txt_drop_ratio``) and ASR pre-training (``subs_train``).
    - ``t2v_layers`` is its own argument (default 2); upstream runs ``enc_layers`` T2V layers (transformer.py:74).
      Flag: set ``t2v_layers`` = ``enc_layers``.
    - The mismatched pass runs the encoder only; upstream also decodes it and discards the result (model.py:169),
      which only consumes dropout draws. No flag.
    - The negative-pair term is computed as -logsigmoid(-s^-), upstream's -log(1 - sigmoid(s^-)) (model.py:302)
      without its overflow for large s^-. No flag.
    - Attention is ``torch.nn.functional.scaled_dot_product_attention`` where upstream uses DAB-DETR's own
      attention (attention.py:281-387): the same formula, rounded differently. No flag.
    - The anchor sine embedding has hidden_dim / 2 values per coordinate; upstream fixes 128 (transformer.py:44),
      the same at the default hidden_dim 256, which upstream requires.
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
        activation: str = "prelu",
        rank_tau: float = 0.5,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(**base_kwargs)
        lw_saliency = self.loss_weights["saliency"]  # QD-DETR sums its three saliency terms under lw_saliency
        self.loss_weights.update({"saliency_rank": lw_saliency, "saliency_neg": lw_saliency})
        d = self.hidden_dim
        self.encoder = T2VEncoder(d, nheads, t2v_layers, enc_layers, dim_feedforward, dropout, activation)
        self.saliency_head = GlobalSaliencyHead(d)
        self.init_queries(num_queries)
        self.decoder = AnchorDecoder(d, nheads, dec_layers, dim_feedforward, dropout, activation)
        self.class_head = nn.Linear(d, 2)  # index 0 = foreground, 1 = no-object
        self.span_head = MLP(d, d, 2, 3)

    # --- anchors ----------------------------------------------------------------------------------------------
    def init_queries(self, num_queries: int) -> None:
        """The decoder's queries: ``num_queries`` learnable unsigmoided (c, w) anchors, N(0, 1) (model.py:63)."""
        self.anchors = nn.Embedding(num_queries, 2)

    def anchor_queries(self, batch_size: int) -> torch.Tensor:
        """Unsigmoided (c, w) anchors [B, Q, 2] the decoder starts from."""
        return self.anchors.weight.expand(batch_size, -1, -1)

    # --- the two stages ---------------------------------------------------------------------------------------
    def encode(
        self, video: torch.Tensor, video_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Clip ``memory`` [B, T, d] with its ``mask`` and positions ``pos``, the ``global`` token [B, d] and the
        ``saliency`` [B, T] = <P1 v_i, P2 g> / sqrt(d) (model.py:173)."""
        memory, global_token, pos = self.encoder(video, video_mask, text, text_mask)
        saliency = self.saliency_head(memory, global_token)
        return {"memory": memory, "mask": video_mask, "pos": pos, "global": global_token, "saliency": saliency}

    def decode(self, encoded: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        """``logits``, ``spans`` [L, B, Q, 2]: span_l = sigmoid(MLP(h_l) + inverse_sigmoid(r_l)) (model.py:133-138)."""
        anchors = self.anchor_queries(batch_size)
        hidden, references = self.decoder(encoded["memory"], encoded["mask"], encoded["pos"], anchors)
        spans = (self.span_head(hidden) + inverse_sigmoid(references)).sigmoid()
        return {"logits": self.class_head(hidden), "spans": spans}

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``logits``/``spans`` [L, B, Q, 2], ``saliency`` [B, T] (and what ``encode`` adds); in training also
        ``saliency_mismatched`` [B, T], each video's saliency under the next sample's query (model.py:160-175)."""
        video, video_mask, text, text_mask = self.project_inputs(batch)
        encoded = self.encode(video, video_mask, text, text_mask)
        out = self.decode(encoded, video.shape[0])
        out.update({k: v for k, v in encoded.items() if k not in ENCODER_STATE})
        if self.training:
            mismatched = self.encode(video, video_mask, text.roll(-1, 0), text_mask.roll(-1, 0))
            out["saliency_mismatched"] = mismatched["saliency"]
        return out

    def extra_losses(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Rank-contrastive over the per-clip labels (summed annotator scores, or 1 inside the window) against the
        mismatched pass, and the negative-pair term (§2.2, model.py:298-343), both weighted by ``lw_saliency``."""
        mask, labels = batch["visual_mask"], batch["saliency"]
        saliency, mismatched = outputs["saliency"], outputs["saliency_mismatched"]
        return {
            "saliency_rank": rank_contrastive_loss(saliency, mismatched, labels, mask, self.hparams.rank_tau),
            "saliency_neg": negative_pair_loss(mismatched, mask),
        }
