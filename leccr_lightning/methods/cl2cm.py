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

from leccr_lightning.losses import positive_mask_from_ids, soft_target_distillation, token_ot_distance
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.baseline import DualEncoder
from leccr_lightning.methods.objectives import InfoNCEObjective, PairObjective
from leccr_lightning.modules.heads import ProjectionHead


class CL2CM(RetrievalMethod):
    """CL2CM as a LightningModule ([recon] defaults, each a named argument).

    Args:
        visual_dim, vocab_size, text_*, visual_*, embed_dim, batch_norm, dropout: as the baseline dual encoder.
        objective: the CM alignment loss (default symmetric InfoNCE, 0.07); ``lingual_objective``: L_sent.
        target_weight: weight of the (t, v) term (1.0); sent_weight 1.0, word_weight 1.0, kd_weight 1.0.
        kd_student_temperature / kd_teacher_temperature: tau_S, tau_T of L_kd (0.07 / 0.07).
        ot_epsilon, ot_max_iter: word-level Sinkhorn entropy (0.05) and iterations (100).
    """

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        text_model: str = "tiny",
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        trainable_layers: list[int] | None = None,
        pooling: str = "mean",
        visual_encoder: str = "mlp",
        visual_hidden: int = 128,
        visual_heads: int = 4,
        max_visual_positions: int = 80,
        embed_dim: int = 128,
        batch_norm: bool = False,
        dropout: float = 0.0,
        objective: PairObjective | None = None,
        lingual_objective: PairObjective | None = None,
        target_weight: float = 1.0,
        sent_weight: float = 1.0,
        word_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_student_temperature: float = 0.07,
        kd_teacher_temperature: float = 0.07,
        ot_epsilon: float = 0.05,
        ot_max_iter: int = 100,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective", "lingual_objective"])
        self.encoder = DualEncoder(
            visual_dim,
            vocab_size,
            text_model,
            text_hidden,
            text_layers,
            text_heads,
            trainable_layers,
            pooling,
            visual_encoder,
            visual_hidden,
            visual_heads,
            max_visual_positions,
            embed_dim,
            batch_norm,
            dropout,
        )
        self.lingual_head = ProjectionHead(self.encoder.text.hidden_size, embed_dim, batch_norm, dropout)
        self.objective = objective if objective is not None else InfoNCEObjective()
        self.lingual_objective = lingual_objective if lingual_objective is not None else InfoNCEObjective()

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
        visual = self.gather(self.encoder.embed_visual(batch["visual"], batch["visual_mask"]))
        source_cm = self.gather(self.encoder.text_head(pooled_s))
        target_cm = self.gather(self.encoder.text_head(pooled_t))
        source_cl = self.gather(self.lingual_head(pooled_s))
        target_cl = self.gather(self.lingual_head(pooled_t))
        index = self.gather(batch["visual_index"])
        positives = positive_mask_from_ids(index, index)
        shared = {
            "progress": self.training_progress(),
            "visual": visual,
            "source": source_cm,
            "target": target_cm,
            "index": index,
            "batch": batch,
        }
        terms = {
            "cm_source": self.objective(
                source_cm @ visual.T, positives, {**shared, "pair": "source", "text": source_cm}
            ),
            "cm_target": self.objective(
                target_cm @ visual.T, positives, {**shared, "pair": "target", "text": target_cm}
            ),
            "sent": self.lingual_objective(target_cl @ source_cl.T, positives),
            "word": word,
            "kd": soft_target_distillation(
                target_cm @ visual.T / hp.kd_student_temperature, target_cl @ source_cl.T / hp.kd_teacher_temperature
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

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.encoder.embed_text(batch["text"]["query"])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.encoder.embed_visual(batch["visual"], batch["visual_mask"])}
