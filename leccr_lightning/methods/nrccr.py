"""NRCCR: noise-robust CCR by multi-view self-distillation and back-translation (ccr_methods §2; official code
LiJiaBei-7/nrccr, cited as ``file:line``).

Text streams share one encoder h = mBERT(x), one sequence head and one projection: English source s, MT target t,
back-translation b. The head prepares x' = LN(LinearLayer(h) + pos) and self-attends; the teacher c attends from the
prepared English tokens to the prepared MT tokens (cross mode) and averages that together with the prepared MT tokens
(model.py:229-272). With v the visual embeddings (unit vectors, S = dot products):

    L = L_tri(s, v) + 0.6 L_tri(t, v) + 0.4 L_sim + 0.1 L_feat + 0.5 L_bt + 0.001 L_gen     (model.py:453-474)

L_tri: VSE++ hardest-negative triplet, margin 0.2, both directions summed (loss.py:84-154); L_sim: cross-entropy of
softmax(v t^T / tau) to softmax(v c'^T / tau), c' = c detached, rows and columns (loss.py:159-180, model.py:461);
L_feat: SmoothL1(beta 4)(t, c) (loss.py:185-194); L_bt: the triplet between s and b; L_gen = BCE(D(h_t), 1) with D the
language discriminator on the mBERT states, which its own Adam first trains on 1/2 [BCE(D(h_s), 1) + BCE(D(h_t), 0)]
(adv.py:188-228, model.py:465-472). Evaluation fuses the target query with its English translation (translate-test):
score = w norm(S(xx2en)) + (1 - w) norm(S(xx)), global min-max, w = 0.2 at validation (validate.py:59-75) and 0.5 at
test (tester_img.py:117-121).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from leccr_lightning.losses import feature_distillation, soft_target_distillation
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective, TripletObjective
from leccr_lightning.metrics import DotScorer
from leccr_lightning.metrics.scoring import FusedScorer
from leccr_lightning.modules.attention import SequenceAttentionHead
from leccr_lightning.modules.discriminator import LanguageDiscriminator
from leccr_lightning.modules.heads import ProjectionHead
from leccr_lightning.modules.pooling import pool
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import build_visual_encoder


def nrccr_adam(params: Iterable) -> torch.optim.Optimizer:
    """NRCCR's main optimiser: Adam(lr 1e-4), no weight decay (train_base.py:47-48, model.py:434-435)."""
    return torch.optim.Adam(params, lr=1e-4)


def xavier_init(linear: nn.Linear) -> None:
    """U(-r, r) weights with r = sqrt(6 / (fan_in + fan_out)), zero bias: the mapping layers' init (model.py:25-31)."""
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


class NRCCR(RetrievalMethod):
    """NRCCR (ACM MM 2022) as a LightningModule with manual optimisation (main Adam + discriminator Adam).

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI.
        text_model / text_*: the text backbone (``"tiny"`` or a local mBERT directory); ``trainable_layers``: the
            mBERT layers fine-tuned (3-11 for images, 5-11 for videos in do_all_*.sh; ``None``: all).
        attention_heads, attention_qk_dim, max_text_positions: the shared sequence head (8, 512, 250).
        visual_encoder: ``"linear"`` (cached CLIP features, Linear(512 -> 1024)), ``"linear_relu"`` (ResNet-152,
            ReLU(Linear(2048 -> 2048))) or ``"frame_attention"`` (video frames); visual_hidden (1024; 2048 for ResNet),
            visual_heads (8), max_visual_positions (80).
        embed_dim (1536), dropout (0.2): the projections Linear -> BatchNorm -> Dropout -> L2 (Xavier-initialised).
        objective: the main alignment loss of (s, v) and (t, v) (default VSE++ hardest triplet, margin 0.2, sum).
        target_weight 0.6, sim_weight 0.4, feat_weight 0.1, back_weight 0.5, adv_scale 0.001: the do_all_*.sh weights.
        sim_temperature 0.07 (loss.py:162), feat_beta 4 (loss.py:189): L_sim and L_feat constants.
        discriminator: ``"not-so-weak"`` (MLP) or ``"strong"`` (conv, VATEX); disc_lr 1e-3, disc_betas (.9, .999).
        gradient_clip_norm (``MethodBase``): the main step's gradient-norm clip (2.0, train_base.py:50).
        translate_weight_val / translate_weight_test: w of the translate-test fusion (0.2 / 0.5; 0: off).
        unmasked_mean, mask_same_item: parity flags, see below.

    The epoch learning-rate rule, the early stop and the t2v-only model selection of the official trainer
    (trainer_img.py:157-208) are trainer callbacks that every NRCCR recipe carries (``configs/trainer/nrccr.yaml``);
    the text policy, the tokenizer's lower-casing and the back-translation / xx2enc roles are data options of
    ``configs/fragments/nrccr.yaml`` (and of its video variants).

    Differences from the official code (the defaults are the correct behaviour; the recipes set the flags):
        - Mean pooling covers valid positions only (and the strong discriminator's convolutions see zeros at padded
          positions); the official code averages over all positions, padding included, for the text streams, the
          teacher's concatenation, the video frames and the discriminator input (model.py:113-116, 246-248, 266-270;
          adv.py:31, 86-91), so an embedding depends on the longest caption of its batch.
          ``unmasked_mean=True`` reproduces it (and then our evaluation batches, ``eval_batch_size`` in file order,
          pad differently from the official length-sorted ones, tag_data_provider_vid.py:160-199).
        - Two captions of the same visual item in a batch are never negatives; the official triplet treats every
          off-diagonal pair as a negative (loss.py:120-137). ``mask_same_item=False`` reproduces it.
        - The official image model runs CLIP ViT-B/32 on raw images inside the forward and re-wraps its output as a new
          leaf, so no gradient reaches CLIP (model.py:134-150); we read the same ``encode_image`` vectors from cached
          features (the data preset's ``features``), which gives the same numbers when they were extracted with CLIP's
          preprocessing.
        - Captions longer than the data ``max_length`` are cut; the official tokenizer never truncates (the NRCCR
          fragment sets ``max_length: 250``, the head's number of positions, so nothing that fits the official model
          is cut).
        - The learning-rate rule counts its first validation as an improvement; the official one needs a validation
          score above 0 (``best_rsum = 0``, trainer_img.py:158-173).
        - The vectors are normalised with an epsilon of 1e-12 (``F.normalize``); the official ``l2norm`` has none.
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
        visual_encoder: str = "linear",
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
        self.text_attention = SequenceAttentionHead(
            hidden, hidden, attention_heads, attention_qk_dim, max_positions=max_text_positions
        )
        self.text_head = ProjectionHead(hidden, embed_dim, batch_norm=True, dropout=dropout)
        self.visual = build_visual_encoder(
            visual_encoder, visual_dim, visual_hidden, visual_heads, max_visual_positions
        )
        self.visual_head = ProjectionHead(self.visual.out_dim, embed_dim, batch_norm=True, dropout=dropout)
        for head in (self.text_head, self.visual_head):
            xavier_init(head.linear)
        self.discriminator = LanguageDiscriminator(hidden, discriminator, unmasked_mean=unmasked_mean)
        self.objective = self.attach_objective(objective if objective is not None else TripletObjective())
        self.back_objective = TripletObjective()

    # --- encoders -------------------------------------------------------------------------------------------
    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(states, mask, "mean", self.hparams.unmasked_mean)

    def encode_tokens(self, tokens: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mBERT states h [B, L, H], prepared head input x' = LN(LinearLayer(h) + pos) [B, L, H])."""
        states, _ = self.text(tokens["input_ids"], tokens["attention_mask"])
        return states, self.text_attention.prepare(states)

    def embed_prepared(self, prepared: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit text embedding: projection of the mean of the self-attended tokens (model.py:243-248)."""
        return self.text_head(self._pool(self.text_attention(prepared, mask), mask))

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_prepared(self.encode_tokens(tokens)[1], tokens["attention_mask"])

    def embed_teacher(
        self, source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor
    ) -> torch.Tensor:
        """c = proj(mean([cross(Q = s', KV = t'); t'])) on the prepared tokens s', t' (model.py:253, 268-269)."""
        cross = self.text_attention(source, source_mask, target, target_mask)
        states = torch.cat([cross, target], dim=1)
        return self.text_head(self._pool(states, torch.cat([source_mask, target_mask], dim=1)))

    def embed_visual(self, visual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        encoded = self.visual(visual, mask)
        return self.visual_head(self._pool(encoded.tokens, encoded.mask))

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
        """L_gen = BCE(D(h_t), 1), the label broadcast to both logits (adv.py:224-226, before ``adv_scale``)."""
        logits = self.discriminator(h_target, mask_target)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def discriminator_loss(self, streams: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """1/2 [BCE(D(h_s), 1) + BCE(D(h_t), 0)] on detached encoder states (adv.py:188-205)."""
        real = self.discriminator(streams["h_source"].detach(), streams["mask_source"])
        fake = self.discriminator(streams["h_target"].detach(), streams["mask_target"])
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )

    def loss_terms(self, streams: Mapping[str, torch.Tensor], batch: Mapping) -> dict[str, torch.Tensor]:
        """The encoder's terms and their weighted total ``loss`` (the discriminator's own loss is separate)."""
        hp = self.hparams
        step = self.alignment_step(batch, {role: streams[role] for role in self.context_roles})
        visual, target, teacher = (step.embeddings[role] for role in ("visual", "target", "teacher"))
        terms = {
            "tri_source": self.objective(step.pair("source", "visual")),
            "tri_target": self.objective(step.pair("target", "visual")),
            # only c is detached: the target softmax(v c^T / tau) still sends gradient into v (loss.py:164-176)
            "sim": soft_target_distillation(
                visual @ target.T / hp.sim_temperature,
                visual @ teacher.detach().T / hp.sim_temperature,
                detach_teacher=False,
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
        """Every term at the current weights (``training_step`` updates the discriminator before ``gen``)."""
        streams = self.streams(batch)
        return {**self.loss_terms(streams, batch), "disc": self.discriminator_loss(streams)}

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

    def discriminator_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One discriminator update on its detached-input loss; touches only discriminator parameters."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        """Discriminator update first, then the encoder loss with the updated discriminator (model.py:465-474)."""
        main_opt, disc_opt = self.optimizers()
        streams = self.streams(batch)
        disc = self.discriminator_loss(streams)
        self.discriminator_step(disc_opt, disc)
        losses = {**self.loss_terms(streams, batch), "disc": disc.detach()}
        self.manual_optimizer_step(main_opt, losses["loss"])
        self.manual_scheduler_step("step")
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
