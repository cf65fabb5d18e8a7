"""NRCCR: noise-robust CCR by self-distillation and back-translation (ccr_methods §2, official code).

Text streams share one encoder, one attention head (self mode) and one projection: English source s,
MT target t, back-translation b. The teacher c attends from the English tokens to the MT tokens (cross
mode), is concatenated with the self-attended MT tokens and pooled. With v the visual embeddings (unit
vectors, S = dot products):

    L = L_tri(s, v) + 0.6 L_tri(t, v) + 0.4 L_sim + 0.1 L_feat + 0.5 L_bt + L_gen     (§2.2, do_all_*.sh)

L_sim: soft-target cross-entropy of softmax(v t^T / tau) to the detached softmax(v c^T / tau), rows and cols;
L_feat: SmoothL1(beta 4)(t, c) = MSE/8; L_bt: triplet between s and b; L_gen = 0.001 BCE(D(h_t), 1) with D the
language discriminator on the encoder states, trained by its own Adam on ½[BCE(D(h_s), 1) + BCE(D(h_t), 0)]
(manual optimisation). Evaluation fuses the target query with its English translation (translate-test):
score = w norm(S(xx2en)) + (1 - w) norm(S(xx)), global min-max, w = 0.2 at validation and 0.5 at test (§2.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable

from leccr_lightning.losses import feature_distillation, soft_target_distillation
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective, TripletObjective
from leccr_lightning.metrics import DotScorer
from leccr_lightning.metrics.scoring import FusedScorer
from leccr_lightning.modules.attention import SharedTextAttention
from leccr_lightning.modules.discriminator import LanguageDiscriminator
from leccr_lightning.modules.heads import ProjectionHead
from leccr_lightning.modules.pooling import pool
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import build_visual_encoder


def nrccr_adam(params: Iterable) -> torch.optim.Optimizer:
    """NRCCR's main optimiser: Adam(lr 1e-4), no weight decay (§2.3)."""
    return torch.optim.Adam(params, lr=1e-4)


class NRCCR(RetrievalMethod):
    """NRCCR (ACM MM 2022) as a LightningModule with manual optimisation (main Adam + discriminator Adam).

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI.
        text_model / text_*: the text backbone (``"tiny"`` or a local mBERT directory; ``trainable_layers``
            3-11 for images, 5-11 for videos in the paper).
        attention_heads, attention_qk_dim, max_text_positions: the shared head (8, 512, 250).
        visual_encoder, visual_hidden (1024 CLIP/video, 2048 ResNet), embed_dim (1536), projection
            with BatchNorm and ``dropout`` 0.2.
        objective: the main alignment loss of (s, v) and (t, v) (default VSE++ hardest triplet, m 0.2, sum).
        target_weight 0.6, sim_weight 0.4, feat_weight 0.1, back_weight 0.5, adv_scale 0.001: loss weights.
        sim_temperature 0.07, feat_beta 4: L_sim and L_feat constants.
        discriminator: ``"not-so-weak"`` (MLP) or ``"strong"`` (conv, VATEX); disc_lr 1e-3, betas (.9, .999).
        gradient_clip_norm (``MethodBase``): gradient-norm clip of the main step (2.0; manual optimisation applies it
            itself, and the configured ``scheduler`` is stepped too).
        translate_weight_val / translate_weight_test: w of the translate-test fusion (0.2 / 0.5; 0: off).
        unmasked_mean: average padding positions too (parity with the official code, §2.6).
        mask_same_item (``RetrievalMethod``): captions of the same visual item are not negatives of each other
            (official: False).
    """

    required_roles = ("source", "target", "back")
    context_roles = ("visual", "source", "target", "back", "teacher")

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        text_model: str = "tiny",
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        trainable_layers: list[int] | None = None,
        attention_heads: int = 8,
        attention_qk_dim: int = 512,
        max_text_positions: int = 250,
        visual_encoder: str = "mlp",
        visual_hidden: int = 1024,
        visual_heads: int = 8,
        max_visual_positions: int = 80,
        embed_dim: int = 1536,
        dropout: float = 0.2,
        objective: PairObjective | None = None,
        target_weight: float = 0.6,
        sim_weight: float = 0.4,
        feat_weight: float = 0.1,
        back_weight: float = 0.5,
        adv_scale: float = 0.001,
        sim_temperature: float = 0.07,
        feat_beta: float = 4.0,
        discriminator: str = "not-so-weak",
        disc_lr: float = 1e-3,
        disc_betas: tuple[float, float] = (0.9, 0.999),
        translate_weight_val: float = 0.2,
        translate_weight_test: float = 0.5,
        unmasked_mean: bool = False,
        optimizer: OptimizerCallable = nrccr_adam,
        gradient_clip_norm: float | None = 2.0,
        **base_kwargs,
    ):
        super().__init__(optimizer=optimizer, gradient_clip_norm=gradient_clip_norm, **base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        self.automatic_optimization = False
        self.text = HFTextEncoder(
            text_model, vocab_size, text_hidden, text_layers, text_heads, trainable_layers=trainable_layers
        )
        hidden = self.text.hidden_size
        self.text_attention = SharedTextAttention(
            hidden, attention_heads, attention_qk_dim, max_positions=max_text_positions
        )
        self.text_head = ProjectionHead(hidden, embed_dim, batch_norm=True, dropout=dropout)
        self.visual = build_visual_encoder(
            visual_encoder, visual_dim, visual_hidden, visual_heads, max_visual_positions
        )
        self.visual_head = ProjectionHead(self.visual.out_dim, embed_dim, batch_norm=True, dropout=dropout)
        self.discriminator = LanguageDiscriminator(hidden, discriminator)
        self.objective = self.attach_objective(objective if objective is not None else TripletObjective())
        self.back_objective = TripletObjective()

    # --- encoders -------------------------------------------------------------------------------------------
    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(states, mask, "mean", self.hparams.unmasked_mean)

    def encode_tokens(self, tokens: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder states h [B, L, H], head input LN(LinearLayer(h) + pos) [B, L, H])."""
        states, _ = self.text(tokens["input_ids"], tokens["attention_mask"])
        return states, self.text_attention.prepare(states)

    def embed_prepared(self, prepared: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit text embedding: projection of the mean of the self-attended tokens."""
        return self.text_head(self._pool(self.text_attention(prepared, mask), mask))

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_prepared(self.encode_tokens(tokens)[1], tokens["attention_mask"])

    def embed_teacher(
        self, source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor
    ) -> torch.Tensor:
        """c = proj(mean([cross(Q = s tokens, KV = t tokens); self(t tokens)])), mean over both parts."""
        cross = self.text_attention(source, source_mask, target, target_mask)
        own = self.text_attention(target, target_mask)
        states = torch.cat([cross, own], dim=1)
        return self.text_head(self._pool(states, torch.cat([source_mask, target_mask], dim=1)))

    def embed_visual(self, visual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.visual_head(self.visual(visual, mask).pooled)

    def streams(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """Embeddings v, s, t, b, teacher c and the encoder states/masks of s and t of a training batch."""
        text = batch["text"]
        h_s, prep_s = self.encode_tokens(text["source"])
        h_t, prep_t = self.encode_tokens(text["target"])
        mask_s, mask_t = text["source"]["attention_mask"], text["target"]["attention_mask"]
        return {
            "visual": self.embed_visual(batch["visual"], batch["visual_mask"]),
            "source": self.embed_prepared(prep_s, mask_s),
            "target": self.embed_prepared(prep_t, mask_t),
            "back": self.embed_text(text["back"]),
            "teacher": self.embed_teacher(prep_s, mask_s, prep_t, mask_t),
            "h_source": h_s,
            "mask_source": mask_s,
            "h_target": h_t,
            "mask_target": mask_t,
        }

    # --- losses ---------------------------------------------------------------------------------------------
    def generator_loss(self, h_target: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
        """L_gen = BCE(D(h_t), 1), the label broadcast to both logits (§2.2 item 5, before ``adv_scale``)."""
        logits = self.discriminator(h_target, mask_target)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def discriminator_loss(
        self,
        h_source: torch.Tensor,
        mask_source: torch.Tensor,
        h_target: torch.Tensor,
        mask_target: torch.Tensor,
    ) -> torch.Tensor:
        """½[BCE(D(h_s), 1) + BCE(D(h_t), 0)] on detached encoder states."""
        real = self.discriminator(h_source.detach(), mask_source)
        fake = self.discriminator(h_target.detach(), mask_target)
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )

    def loss_terms(self, streams: Mapping[str, torch.Tensor], batch: Mapping) -> dict[str, torch.Tensor]:
        """The §2.2 terms and their weighted total ``loss`` (the discriminator's own loss is separate)."""
        hp = self.hparams
        step = self.alignment_step(batch, {role: streams[role] for role in self.context_roles})
        visual, target, teacher = (step.embeddings[role] for role in ("visual", "target", "teacher"))
        terms = {
            "tri_source": self.objective(step.pair("source", "visual")),
            "tri_target": self.objective(step.pair("target", "visual")),
            "sim": soft_target_distillation(
                visual @ target.T / hp.sim_temperature, visual @ teacher.T / hp.sim_temperature
            ),
            "feat": feature_distillation(target, teacher, beta=hp.feat_beta),
            "back": self.back_objective(step.pair("source", "back")),
            "gen": self.generator_loss(streams["h_target"], streams["mask_target"]),
        }
        terms["loss"] = (
            terms["tri_source"]
            + hp.target_weight * terms["tri_target"]
            + hp.sim_weight * terms["sim"]
            + hp.feat_weight * terms["feat"]
            + hp.back_weight * terms["back"]
            + hp.adv_scale * terms["gen"]
        )
        return terms

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        streams = self.streams(batch)
        terms = self.loss_terms(streams, batch)
        terms["disc"] = self.discriminator_loss(
            streams["h_source"], streams["mask_source"], streams["h_target"], streams["mask_target"]
        )
        return terms

    # --- optimisation ---------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Main parameter groups without the discriminator (it has its own optimiser)."""
        groups = super().parameter_groups()
        disc = {id(p) for p in self.discriminator.parameters()}
        return [{**g, "params": [p for p in g["params"] if id(p) not in disc]} for g in groups]

    def configure_optimizers(self):
        main = self.optimizer_factory(self.parameter_groups())
        disc = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.hparams.disc_lr, betas=tuple(self.hparams.disc_betas)
        )
        if self.scheduler_factory is None:
            return [main, disc]
        return [main, disc], [self.build_scheduler(main)]

    def discriminator_step(self, losses: Mapping[str, torch.Tensor]) -> None:
        """One discriminator update on its detached-input loss; touches only discriminator parameters."""
        disc_opt = self.optimizers()[1]
        disc_opt.zero_grad()
        self.manual_backward(losses["disc"])
        disc_opt.step()

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        main_opt, _ = self.optimizers()
        losses = self.compute_losses(batch)
        self.manual_optimizer_step(main_opt, losses["loss"])
        self.manual_scheduler_step("step")
        self.discriminator_step(losses)
        self.log_losses(losses, int(batch["visual_index"].shape[0]))
        return losses["loss"].detach()

    def on_train_epoch_end(self) -> None:
        self.manual_scheduler_step("epoch")

    # --- evaluation -----------------------------------------------------------------------------------------
    def translate_weight(self, stage: str) -> float:
        return self.hparams.translate_weight_val if stage == "val" else self.hparams.translate_weight_test

    def scorer(self, stage: str = "test") -> Callable:
        """Dot product, or the translate-test fusion w norm(S(translated)) + (1 - w) norm(S(query))."""
        weight = self.translate_weight(stage)
        if weight == 0:
            return DotScorer("query", "gallery")
        return FusedScorer([(DotScorer("translated", "gallery"), weight), (DotScorer("query", "gallery"), 1 - weight)])

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        views = {"query": self.embed_text(batch["text"]["query"])}
        if "translated" in batch["text"]:
            views["translated"] = self.embed_text(batch["text"]["translated"])
        elif max(self.hparams.translate_weight_val, self.hparams.translate_weight_test) > 0:
            raise ValueError(
                "NRCCR translate-test needs the 'translated' (xx2enc) queries: set "
                "data.init_args.query_roles to [query, translated], or translate_weight_* to 0"
            )
        return views

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.embed_visual(batch["visual"], batch["visual_mask"])}
