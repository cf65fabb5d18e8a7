"""CL2CM: cross-lingual to cross-modal knowledge transfer (AAAI 2024; ccr_methods §4, no public code: [recon]).

One shared multilingual text encoder feeds two networks. The cross-lingual (CL) network aligns English s and MT
target t at sentence level (a pair loss on its own head) and at word level (entropic OT distance between the two
token sets, cosine cost, plan held constant). The cross-modal (CM) network aligns visual v with s and t. Knowledge
moves from CL to CM by relational distillation (§4.2):

    L = L_cm(s, v) + w_t L_cm(t, v) + w_sent L_sent(t, s) + w_word L_word + w_kd L_kd,
    L_kd = CE(softmax(t^CM v^T / tau_S), detached softmax(t^CL s^CL^T / tau_T)), rows and columns.

Inference uses the CM network only (t^CM against v). Every weight, temperature and OT constant is [recon].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from leccr_lightning.losses import soft_target_distillation, token_ot_distance
from leccr_lightning.methods.baseline import DualEncoderBaseline
from leccr_lightning.methods.objectives import InfoNCEObjective, PairObjective
from leccr_lightning.modules.heads import ProjectionHead


class CL2CM(DualEncoderBaseline):
    """CL2CM as a LightningModule ([recon] defaults, each a named argument).

    Args:
        baseline_kwargs: the dual encoder and the rest of ``DualEncoderBaseline``'s arguments, among them
            ``objective`` (the CM alignment loss, default symmetric InfoNCE 0.07) and ``target_weight`` (1.0).
        lingual_objective: L_sent (default symmetric InfoNCE); sent_weight 1.0, word_weight 1.0, kd_weight 1.0.
        kd_student_temperature / kd_teacher_temperature: tau_S, tau_T of L_kd (0.07 / 0.07).
        ot_epsilon, ot_max_iter: word-level Sinkhorn entropy (0.05) and iterations (100).

    Reconstructed choices (no official code; the paper body was not available, ccr_methods §4.2), with defaults:
        - SE and TE are one shared text encoder; the CL network has its own projection head (``lingual_head``).
        - L_sent: symmetric InfoNCE (0.07) between t^CL and s^CL (``lingual_objective``), weight 1.0.
        - L_word: entropic OT distance <P*, C> between the mBERT token states of s and t, C = 1 - cos, uniform
          marginals over valid tokens, eps 0.05, 100 log-domain Sinkhorn iterations, the plan held constant; weight 1.0.
        - CM network: the alignment ``objective`` on (s, v) and (t, v) (InfoNCE 0.07), MT weight 1.0.
        - L_kd: cross-entropy of softmax(t^CM v^T / 0.07) to the detached softmax(t^CL s^CL^T / 0.07), rows and
          columns; weight 1.0.
        - Inference: the CM network alone (t^CM against v), plain cosine.
        - Recipes: the NRCCR-like recipe of configs/model/cl2cm.yaml (mBERT layers 3-11 / 5-11, NRCCR's visual
          encoders, 1536-d with BatchNorm and dropout 0.2, Adam 1e-4, clip 2.0), selection on validation SumR.
    """

    module_arguments = ("lingual_objective",)
    context_roles = ("visual", "source", "target", "source_lingual", "target_lingual")

    def __init__(
        self,
        visual_dim: int,
        lingual_objective: PairObjective | None = None,
        sent_weight: float = 1.0,
        word_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_student_temperature: float = 0.07,
        kd_teacher_temperature: float = 0.07,
        ot_epsilon: float = 0.05,
        ot_max_iter: int = 100,
        **baseline_kwargs,
    ):
        super().__init__(visual_dim, **baseline_kwargs)
        hp = self.hparams
        self.lingual_head = ProjectionHead(self.encoder.text.hidden_size, hp.embed_dim, hp.batch_norm, hp.dropout)
        self.lingual_objective = self.attach_objective(
            lingual_objective if lingual_objective is not None else InfoNCEObjective()
        )

    def _text(self, tokens: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states [B, L, H], pooled [B, H]) of the shared text encoder."""
        return self.encoder.text(tokens["input_ids"], tokens["attention_mask"])

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        hp = self.hparams
        text = batch["text"]
        states_s, pooled_s = self._text(text["source"])
        states_t, pooled_t = self._text(text["target"])
        word = token_ot_distance(
            states_s,
            text["source"]["attention_mask"],
            states_t,
            text["target"]["attention_mask"],
            hp.ot_epsilon,
            hp.ot_max_iter,
        ).mean()
        visual = self.encoder.embed_visual(batch["visual"], batch["visual_mask"])
        embeddings = {
            "visual": visual,
            "source": self.encoder.text_head(pooled_s),
            "target": self.encoder.text_head(pooled_t),
            "source_lingual": self.lingual_head(pooled_s),
            "target_lingual": self.lingual_head(pooled_t),
        }
        step = self.alignment_step(batch, embeddings)
        target_cm, visual = step.embeddings["target"], step.embeddings["visual"]
        lingual = step.pair("target_lingual", "source_lingual")
        terms = {
            "cm_source": self.objective(step.pair("source", "visual")),
            "cm_target": self.objective(step.pair("target", "visual")),
            "sent": self.lingual_objective(lingual),
            "word": word,
            "kd": soft_target_distillation(
                target_cm @ visual.T / hp.kd_student_temperature, lingual.scores / hp.kd_teacher_temperature
            ),
        }
        terms["loss"] = (
            terms["cm_source"]
            + hp.target_weight * terms["cm_target"]
            + hp.sent_weight * terms["sent"]
            + hp.word_weight * terms["word"]
            + hp.kd_weight * terms["kd"]
        )
        return terms
