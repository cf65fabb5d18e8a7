"""LECCR (Wang et al., ACM MM 2024): MLLM-enhanced CCR with semantic slots, multi-level matching and softened
matching under English guidance (spec ccr_methods §3).

Forward pass (§3.2): the MLLM description Z of a visual item is encoded by the shared text encoder (under no_grad,
as in the official code) or read as precomputed token features (``generated_caption_type: feats``, §3.1) and
projected to the visual width; N learnable slot queries attend to it (CA_q) -> S0;
visual tokens X attend to S0 (CA_v) -> X', slots attend to X (CA_s) -> S'. Embeddings: v = norm(W_v pool(X')),
slot embeddings c_k = W_c S'_k (not normalised), t = norm(W_t [CLS]) for English t^s and MT target t^t.

Loss (§3.3): L = (L_vs + w_cv L_cv) + ((1 - w_d) L_vt + w_d L_dstl) + L_st + w_c L_c + w_reg L_reg.

Evaluation (§3.5): images score v . t; videos 0.9 mm(v . t) + 0.1 mm(max_k c_k . t) (global min-max).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.losses import positive_mask_from_ids, slot_diversity, symmetric_info_nce
from leccr_lightning.losses.slots import (
    english_guided_soft_matching,
    max_over_slots,
    slot_text_matching,
    slot_vision_alignment,
)
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective
from leccr_lightning.metrics import DotScorer, FusedScorer
from leccr_lightning.modules.pooling import masked_mean, pool
from leccr_lightning.modules.slots import SemanticSlots, SlotVisualInteraction
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import TimmImageEncoder

VISUAL_ENCODERS = ("tokens", "frames", "timm")
EVAL_SCORINGS = ("global", "fused")


class LeccrInfoNCE(PairObjective):
    """LECCR's multi-positive symmetric InfoNCE (§3.3 item 1) with the method's learnable temperature, read from
    ``context["temperature"]`` (the same tau serves L_c)."""

    def forward(self, scores, positive_mask, context=None):
        if context is None or "temperature" not in context:
            raise ValueError("LeccrInfoNCE needs context['temperature'] (the LECCR method passes its tau)")
        return symmetric_info_nce(scores, positive_mask, context["temperature"])


class MaxSlotScorer:
    """score_qg = max_k c_{k,g} . t_q over the gallery's slot view (LECCR video fusion term, §3.5)."""

    def __init__(self, query_view: str = "query", slot_view: str = "slots") -> None:
        self.query_view = query_view
        self.slot_view = slot_view

    def __call__(self, queries: Mapping[str, torch.Tensor], gallery: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.slot_view not in gallery:
            raise ValueError(f"gallery view {self.slot_view!r} is missing; available views: {sorted(gallery)}")
        return max_over_slots(gallery[self.slot_view], queries[self.query_view]).T


class LinearWarmupDecay(torch.optim.lr_scheduler.LRScheduler):
    """lr = base * s/W for s < W, then base * (T - s)/(T - W), floored at 0, with W = warmup_fraction * T
    (per-step linear warm-up over 10 % of the steps then linear decay to 0, LECCR recipe §3.4).

    ``total_steps=None`` lets the LECCR method fill in the trainer's estimated number of steps when it builds the
    optimiser (``set_total_steps``); until then the factor is 0. Use with ``scheduler_interval: step``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_fraction: float = 0.1,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ):
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction: expected a value in [0, 1), got {warmup_fraction}")
        self.warmup_fraction = warmup_fraction
        self.total_steps = total_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate at optimiser step ``step``."""
        if self.total_steps is None:
            return 0.0
        warmup = int(self.warmup_fraction * self.total_steps)
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the schedule length and reset the current learning rates to it."""
        if total_steps < 1:
            raise ValueError(f"total_steps: expected at least 1 step, got {total_steps}")
        self.total_steps = total_steps
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class LeccrVisualEncoder(nn.Module):
    """Visual tokens X [B, T, d] and their mask [B, T] from cached features [B, T, D] or raw images [B, 3, H, W].

    ``tokens``: an identity (``width=None``, the official image path whose CLIP tokens enter the slot interaction
    directly) or a Linear(D -> d) input projection; ``frames``: the same, then one self-attention layer with a
    key-padding mask (the official video path: d_model = feature dim, 8 heads, no input projection); ``timm``: the
    token map of a timm backbone on pixels (end-to-end fine-tuning, the official CLIP image path), all tokens valid,
    then the identity or a Linear(C -> d) projection.
    """

    def __init__(
        self,
        kind: str,
        in_dim: int,
        width: int | None,
        num_heads: int,
        feedforward: int,
        dropout: float,
        timm_model: str = "resnet18",
        timm_checkpoint: str | None = None,
        timm_kwargs: dict | None = None,
    ):
        super().__init__()
        if kind not in VISUAL_ENCODERS:
            raise ValueError(f"visual_encoder {kind!r}: expected one of {VISUAL_ENCODERS}")
        self.backbone = None
        if kind == "timm":
            if in_dim != 3:
                raise ValueError(f"visual_encoder 'timm' reads RGB pixels (visual_dim 3), got visual_dim={in_dim}")
            self.backbone = TimmImageEncoder(timm_model, timm_checkpoint, model_kwargs=timm_kwargs)
            in_dim = self.backbone.out_dim
        self.out_dim = width or in_dim
        self.project = nn.Identity() if width is None else nn.Linear(in_dim, width)
        self.frames = None
        if kind == "frames":
            self.frames = nn.TransformerEncoderLayer(self.out_dim, num_heads, feedforward, dropout, batch_first=True)

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backbone is not None:
            if visual.ndim != 4:
                raise ValueError(
                    f"visual_encoder 'timm' expects pixel batches [B, 3, H, W] (data features kind 'images'), "
                    f"got shape {tuple(visual.shape)}"
                )
            visual, _ = self.backbone(visual)
            mask = torch.ones(visual.shape[:2], dtype=torch.bool, device=visual.device)
        tokens = self.project(visual)
        if self.frames is not None:
            tokens = self.frames(tokens, src_key_padding_mask=~mask.bool())
        return tokens, mask.bool()


class LECCR(RetrievalMethod):
    """LECCR on cached visual features (image tokens or video frames) or on raw images through a timm backbone.

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI.
        text_model: ``"tiny"`` (random BERT of ``text_hidden``/``text_layers``/``text_heads``) or a local HF
            directory (mBERT in the paper); shared by captions and descriptions.
        text_pooling: sentence vector of the captions (``cls`` as in the paper).
        visual_encoder: ``tokens`` (images), ``frames`` (videos: one self-attention layer) or ``timm`` (raw images,
            data features kind ``images``: the backbone ``timm_model`` fine-tuned end to end, its token map as X;
            weights from the local file ``timm_checkpoint``, random initialisation without one; ``timm_kwargs`` go to
            ``timm.create_model``, e.g. ``{img_size: 384}`` for the paper's ViT-B/32 at 384 px). A CNN's token map
            has no [CLS] token: use ``visual_pooling: mean`` with it.
        visual_width: width d of the slot space; ``None`` keeps the feature dim (official: 512 CLIP / 4096 video).
        frame_feedforward: hidden size of the frame self-attention layer's MLP [recon: PyTorch default 2048].
        visual_pooling: global visual pooling of X' (``cls``: first token, images; ``mean``: masked mean, videos).
        embed_dim: joint space (256). num_slots: N (4 images, 2 video). slot_layers: CA_q depth (3 images, 2 video).
        interaction_layers: CA_v / CA_s depth (2). attention_heads: 8. dropout: 0.1.
        slot_init: ``zeros`` (official) or ``normal`` with std ``slot_init_std`` (documented deviation).
        description_grad: back-propagate into the text encoder through descriptions (official: no_grad, False).
        description_feature_dim: D of precomputed description token features (data ``description_features``):
            when set, descriptions are read from ``batch["description_features"]`` [B, L, D] (mask
            ``description_mask``) through Linear(D -> d) and the text encoder is not run on them; ``None`` encodes
            the description text.
        temperature: initial learnable tau (0.07), no clamp as in the official code unless ``temperature_bounds``.
        objective: alignment objective of (v, t^s), (v, t^t), (t^s, t^t) (default: multi-positive InfoNCE with tau);
            its ``context`` holds ``pair`` (``vs``/``vt``/``st``), ``temperature``, ``progress`` and ``batch``.
        slot_vision_weight (w_cv 0.01), slot_text_weight (w_c 0.01), dstl_weight (w_d 0.5),
            diversity_weight (w_reg 0.01): the multi30k fr/cs weights (§3.3 table; per-dataset in configs).
        dstl_alpha: English vs slot mix of the soft target (0.8).
        parity_dstl_orientation: add M^s as [visual, text] to t^s v^T without transposing (the official bug);
            default False adds it as [text, visual].
        eval_scoring: ``global`` (v . t, images) or ``fused`` (video: ``fusion_weights`` 0.9/0.1 of min-max
            normalised v . t and max-over-slots).
    """

    required_roles = ("source", "target", "description")

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        text_model: str = "tiny",
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        text_pooling: str = "cls",
        visual_encoder: str = "tokens",
        timm_model: str = "resnet18",
        timm_checkpoint: str | None = None,
        timm_kwargs: dict | None = None,
        visual_width: int | None = None,
        frame_feedforward: int = 2048,
        visual_pooling: str = "cls",
        embed_dim: int = 256,
        num_slots: int = 4,
        slot_layers: int = 3,
        interaction_layers: int = 2,
        attention_heads: int = 8,
        dropout: float = 0.1,
        slot_init: str = "zeros",
        slot_init_std: float = 0.02,
        description_grad: bool = False,
        description_feature_dim: int | None = None,
        temperature: float = 0.07,
        temperature_bounds: tuple[float, float] | None = None,
        objective: PairObjective | None = None,
        slot_vision_weight: float = 0.01,
        slot_text_weight: float = 0.01,
        dstl_weight: float = 0.5,
        diversity_weight: float = 0.01,
        dstl_alpha: float = 0.8,
        parity_dstl_orientation: bool = False,
        eval_scoring: str = "global",
        fusion_weights: tuple[float, float] = (0.9, 0.1),
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if eval_scoring not in EVAL_SCORINGS:
            raise ValueError(f"eval_scoring {eval_scoring!r}: expected one of {EVAL_SCORINGS}")
        if not 0.0 <= dstl_weight <= 1.0:
            raise ValueError(f"dstl_weight: expected a value in [0, 1], got {dstl_weight}")
        self.text = HFTextEncoder(text_model, vocab_size, text_hidden, text_layers, text_heads, pooling=text_pooling)
        self.visual = LeccrVisualEncoder(
            visual_encoder,
            visual_dim,
            visual_width,
            attention_heads,
            frame_feedforward,
            dropout,
            timm_model,
            timm_checkpoint,
            timm_kwargs,
        )
        width = self.visual.out_dim
        self.description_proj = nn.Linear(description_feature_dim or self.text.hidden_size, width)
        self.slots = SemanticSlots(num_slots, width, slot_layers, attention_heads, dropout, slot_init, slot_init_std)
        self.interaction = SlotVisualInteraction(width, interaction_layers, attention_heads, dropout)
        self.text_head = nn.Linear(self.text.hidden_size, embed_dim)
        self.visual_head = nn.Linear(width, embed_dim)
        self.slot_head = nn.Linear(width, embed_dim)
        self.slot_proj = nn.Linear(width, width)
        self.token_proj = nn.Linear(width, width)
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        self.objective = objective if objective is not None else LeccrInfoNCE()

    # --- encoders -----------------------------------------------------------------------------------------------
    def tau(self) -> torch.Tensor:
        """The learnable temperature (clamped only when ``temperature_bounds`` is set)."""
        bounds = self.hparams.temperature_bounds
        return self.temperature if bounds is None else self.temperature.clamp(*bounds)

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """t = norm(W_t pool(text states)) [B, embed_dim]."""
        _, pooled = self.text(tokens["input_ids"], tokens["attention_mask"])
        return F.normalize(self.text_head(pooled), dim=-1)

    def description_slots(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S0 = CA_q(Q, W_z Z) [B, N, d] from the description tokens (Z under no_grad unless description_grad)."""
        with torch.set_grad_enabled(self.hparams.description_grad and torch.is_grad_enabled()):
            states, _ = self.text(tokens["input_ids"], tokens["attention_mask"])
        return self.slots(self.description_proj(states), tokens["attention_mask"].bool())

    def feature_slots(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """S0 = CA_q(Q, W_z Z) [B, N, d] from precomputed description token features Z [B, L, D] (mask [B, L])."""
        expected = self.hparams.description_feature_dim
        if features.shape[-1] != expected:
            raise ValueError(
                f"description features have D={features.shape[-1]}, but description_feature_dim={expected}"
            )
        return self.slots(self.description_proj(features), mask.bool())

    def batch_slots(self, batch: Mapping) -> torch.Tensor:
        """S0 of a batch: from its precomputed description features when ``description_feature_dim`` is set, else
        from its description text."""
        if self.hparams.description_feature_dim is not None:
            if "description_features" not in batch:
                raise ValueError(
                    "LECCR with description_feature_dim reads precomputed description features: add 'description' "
                    "to data.init_args.roles and set data.init_args.description_features"
                )
            return self.feature_slots(batch["description_features"], batch["description_mask"])
        if "description" not in batch.get("text", {}):
            raise ValueError(
                "LECCR needs the MLLM description of every visual item: add 'description' to "
                "data.init_args.roles and set data.init_args.descriptions (or set description_feature_dim and "
                "data.init_args.description_features)"
            )
        return self.description_slots(batch["text"]["description"])

    def encode_visual(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """Visual tokens X, slots S0, global v [B, e] and slot embeddings c [B, N, e] of a batch with descriptions."""
        tokens, mask = self.visual(batch["visual"], batch["visual_mask"])
        slots = self.batch_slots(batch)
        enhanced, local = self.interaction(tokens, mask, slots)
        pooled = pool(enhanced, mask, self.hparams.visual_pooling)
        return {
            "tokens": tokens,
            "mask": mask,
            "slots": slots,
            "global": F.normalize(self.visual_head(pooled), dim=-1),
            "local": self.slot_head(local),
        }

    # --- losses -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        hp = self.hparams
        tau = self.tau()
        visual = self.encode_visual(batch)
        source_local = self.embed_text(batch["text"]["source"])
        target_local = self.embed_text(batch["text"]["target"])
        v = self.gather(visual["global"])
        source, target = self.gather(source_local), self.gather(target_local)
        index = self.gather(batch["visual_index"])
        positives = positive_mask_from_ids(index, index)
        context = {"temperature": tau, "progress": self.training_progress(), "batch": batch}
        # §3.3 item 1: multi-positive InfoNCE on (v, t^s), (v, t^t), (t^s, t^t); scores are [texts, visuals].
        loss_vs = self.objective(source @ v.T, positives, {**context, "pair": "vs"})
        loss_vt = self.objective(target @ v.T, positives, {**context, "pair": "vt"})
        loss_st = self.objective(target @ source.T, positives, {**context, "pair": "st"})
        # §3.3 item 2: slot-text max-similarity matching, per process, diagonal labels.
        loss_c = slot_text_matching(visual["local"], source_local, tau) + slot_text_matching(
            visual["local"], target_local, tau
        )
        # §3.3 item 3: slot-vision alignment over the raw tokens (mean over k, p taken first, by linearity).
        slot_unit = F.normalize(self.slot_proj(visual["slots"]), dim=-1).mean(1, keepdim=True)
        token_unit = masked_mean(F.normalize(self.token_proj(visual["tokens"]), dim=-1), visual["mask"])
        loss_cv = slot_vision_alignment(self.gather(slot_unit), self.gather(token_unit).unsqueeze(1), positives)
        # §3.3 item 4: slot diversity on S0, per process.
        loss_reg = slot_diversity(visual["slots"])
        # §3.3 item 5: softened matching under English guidance.
        slot_scores = max_over_slots(self.gather(visual["local"]), source)
        if not hp.parity_dstl_orientation:
            slot_scores = slot_scores.T
        loss_dstl = english_guided_soft_matching(source @ v.T, slot_scores, target @ v.T, hp.dstl_alpha)
        total = (
            (loss_vs + hp.slot_vision_weight * loss_cv)
            + ((1 - hp.dstl_weight) * loss_vt + hp.dstl_weight * loss_dstl)
            + loss_st
            + hp.slot_text_weight * loss_c
            + hp.diversity_weight * loss_reg
        )
        return {
            "loss": total,
            "vs": loss_vs,
            "vt": loss_vt,
            "st": loss_st,
            "slot_text": loss_c,
            "slot_vision": loss_cv,
            "slot_diversity": loss_reg,
            "dstl": loss_dstl,
            "temperature": tau.detach(),
        }

    # --- evaluation ---------------------------------------------------------------------------------------------
    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.embed_text(batch["text"]["query"])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        visual = self.encode_visual(batch)
        views = {"gallery": visual["global"]}
        if self.hparams.eval_scoring == "fused":
            views["slots"] = visual["local"]
        return views

    def scorer(self, stage: str = "test") -> Callable:
        if self.hparams.eval_scoring == "global":
            return DotScorer("query", "gallery")
        global_weight, slot_weight = self.hparams.fusion_weights
        return FusedScorer([(DotScorer("query", "gallery"), global_weight), (MaxSlotScorer(), slot_weight)])

    # --- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        config = super().configure_optimizers()
        if isinstance(config, dict):
            scheduler = config["lr_scheduler"]["scheduler"]
            if isinstance(scheduler, LinearWarmupDecay) and scheduler.total_steps is None:
                scheduler.set_total_steps(max(1, int(self.trainer.estimated_stepping_batches)))
        return config
