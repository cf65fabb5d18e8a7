"""LECCR (Wang et al., ACM MM 2024): MLLM-enhanced CCR with semantic slots, multi-level matching and softened
matching under English guidance (spec ccr_methods §3; official code ``LiJiaBei-7/leccr``, files under ``LECCR/``).

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
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from leccr_lightning.distributed import is_distributed
from leccr_lightning.losses import slot_diversity
from leccr_lightning.losses.slots import (
    english_guided_soft_matching,
    max_over_slots,
    slot_text_matching,
    slot_vision_alignment,
    slot_vision_summary,
)
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import MethodTemperatureInfoNCE, PairObjective
from leccr_lightning.metrics import DotScorer, FusedScorer
from leccr_lightning.modules.pooling import pool
from leccr_lightning.modules.slots import SemanticSlots, SlotVisualInteraction
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import build_visual_encoder

VISUAL_ENCODERS = ("tokens", "self_attention", "timm")
EVAL_SCORINGS = ("global", "fused")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


class MaxSlotScorer:
    """score_qg = max_k c_{k,g} . t_q over the gallery's slot view (LECCR video fusion term, §3.5)."""

    def __init__(self, query_view: str = "query", slot_view: str = "slots") -> None:
        self.query_view = query_view
        self.slot_view = slot_view

    def __call__(self, queries: Mapping[str, torch.Tensor], gallery: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.slot_view not in gallery:
            raise ValueError(f"gallery view {self.slot_view!r} is missing; available views: {sorted(gallery)}")
        return max_over_slots(gallery[self.slot_view], queries[self.query_view]).T


class LECCR(RetrievalMethod):
    """LECCR on cached visual features (image tokens or video frames) or on raw images through a timm backbone.

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI.
        text_model: ``"tiny"`` (random BERT of ``text_hidden``/``text_layers``/``text_heads``) or a local HF
            directory (mBERT in the paper); shared by captions and descriptions.
        text_max_positions: position table of the tiny BERT (a pretrained model keeps its own); the official
            training does not truncate, so every training text must fit (MLLM descriptions on real text need ~256).
        text_pooling: sentence vector of the captions (``cls`` as in the paper).
        visual_encoder: ``tokens`` (images: the tokens as they are), ``self_attention`` (videos: the official frame
            self-attention layer, ``modules.slots.FrameSelfAttention``) or ``timm`` (raw images, data features kind
            ``images``: the backbone ``timm_model`` fine-tuned end to end, its token map as X; weights from the local
            file ``timm_checkpoint``, random initialisation without one; ``timm_kwargs`` go to ``timm.create_model``,
            e.g. ``{img_size: 384}`` for the paper's ViT-B/32 at 384 px). A CNN's token map has no [CLS] token: use
            ``visual_pooling: mean`` with it.
        visual_width: width d of the slot space; ``None`` keeps the feature dim (official: 512 CLIP / 4096 video).
        visual_pooling: global visual pooling of X' (``cls``: first token, images; ``mean``: masked mean, videos).
        embed_dim: joint space (256). num_slots: N (4 images, 2 video). slot_layers: CA_q depth (3 images, 2 video).
        interaction_layers: CA_v / CA_s depth (2). attention_heads: 8. dropout: 0.1.
        slot_init: ``zeros`` (official) or ``normal`` with std ``slot_init_std`` (a deviation, ccr_methods §3.7).
        description_grad: back-propagate into the text encoder through descriptions (official: no_grad, False).
        description_feature_dim: D of precomputed description token features (data ``description_features``):
            when set, descriptions are read from ``batch["description_features"]`` [B, L, D] (mask
            ``description_mask``) through Linear(D -> d) and the text encoder is not run on them; ``None`` encodes
            the description text.
        temperature: initial learnable tau (0.07), no clamp as in the official code unless ``temperature_bounds``.
        objective: alignment objective of the pairs (source, visual), (target, visual), (target, source) (default:
            multi-positive InfoNCE at the method's learnable tau, ``context.temperature``).
        slot_vision_weight (w_cv 0.01), slot_text_weight (w_c 0.01), dstl_weight (w_d 0.5),
            diversity_weight (w_reg 0.01): the multi30k fr/cs weights (§3.3 table; per-dataset in configs).
        dstl_alpha: English vs slot mix of the soft target (0.8).
        slot_vision_gather: score L_cv against the slots and tokens of every rank (official images; the official
            video code scores each rank's own batch, video_model_retrieval_caption.py:146-147).
        eval_scoring: ``global`` (v . t, images) or ``fused`` (video: ``fusion_weights`` 0.9/0.1 of min-max
            normalised v . t and max-over-slots).
        parity_dstl_orientation, parity_slot_vision_norm, parity_slot_vision_padding, parity_gather_gradient:
            reproduce official bugs (below; default False = the corrected computation).

    Differences from the official code (``LiJiaBei-7/leccr``, paths under ``LECCR/``), each with its flag:

    1. ``parity_dstl_orientation``: the official soft target adds the max-over-slots matrix, built [visual, text]
       (model_retrieval_caption.py:103-105), to t^s v^T, built [text, visual] (:101), without transposing it
       (:109). Default: transposed; True reproduces the official sum (the paper recipes set it).
    2. ``parity_slot_vision_norm``: the official L_cv normalises the projected slots [B, N, d] and tokens
       [B, T, d] with ``F.normalize``'s default dim=1, i.e. each feature over the N slots / T tokens of an item
       (:123-124), not each vector. Default: per vector; True reproduces it (the paper recipes set it). On one
       cached global feature per image (T = 1, item 6) it reduces each token to the signs of its features.
    3. ``parity_slot_vision_padding``: the official video L_cv normalises and averages over every frame position,
       the padded ones included (their encoder outputs are not zero; video_model_retrieval_caption.py:149-160), so
       it depends on the batch's longest video. Default: padded frames left out; True reproduces it (the video
       recipes set it; images have no padding).
    4. ``parity_gather_gradient``: the official AllGather's backward returns only the local slice (xvlm.py:50-67),
       so after DDP averages the ranks, every gathered term (L_vs, L_vt, L_st, L_dstl, image L_cv) reaches the
       weights before the gather with 1/W of its gradient, while the per-rank terms (L_c, L_reg, video L_cv) and
       the weights after the gather (tau) keep theirs. Default: the full-batch gradient (``all_gather_with_grad``);
       True scales the gradient through every gather by 1/W (the paper recipes set it; no effect on one device).
    5. Multi-GPU layout (run_multi30k.sh:6, image_Retrieval_caption.py:331-332): 2 GPUs x 64, contrastive, L_dstl
       and image L_cv gathered over 128, L_c, L_reg and video L_cv per GPU over 64. The paper recipes do the same
       (``trainer.devices`` 2, ``data.batch_size`` 64, ``gather_negatives``, ``slot_vision_gather`` false for
       videos); on one device with batch 128, L_c and L_reg see 128 items.
    6. ``visual_encoder``: the official image encoder is OpenAI CLIP ViT-B/32 fine-tuned end to end at 384 px
       (position embeddings bicubic-interpolated from 7x7 to 12x12, clip/model.py:408-419,456-481), its 145 tokens
       after ln_post @ proj (512-d, clip/model.py:340-346), trained on RandomResizedCrop(384, 0.5-1, bicubic) +
       flip and tested on Resize(384) (dataset/__init__.py:53-83). ``tokens`` uses the cached features of the
       data preset as they are (the image recipes: one frozen global CLIP feature, T = 1); ``timm`` fine-tunes a
       timm backbone from a local checkpoint, whose token map lacks CLIP's 768 -> 512 proj (``visual_width``
       adds a fresh one) and whose position embeddings timm resamples with antialiased bicubic.
    7. ``optimizer``: the official ``transformers.optimization.AdamW`` (optim.py:1,63) applies the weight decay
       after the Adam step and adds eps to sqrt(v) before the bias correction; the presets use ``torch.optim.AdamW``
       (decay first, eps after the correction): same lr, betas, eps and decay, O(lr^2 wd) apart per step.
    8. ``no_decay_keys``: the preset uses the official substrings (optim.py:21-29), so the temperature and the
       slot queries are decayed as upstream; a timm backbone's norms (``norm1``/``norm2``/``norm``) are then
       excluded, while the official CLIP's ``ln_*`` weights are decayed.
    9. ``scheduler.init_args.num_training_steps``: the official schedule length is epochs x ceil(N / global batch)
       (image_Retrieval_caption.py:418, scheduler.py:5-6) while its loader drops the last partial batch, so its lr
       ends slightly above 0; unset, ours is the number of steps actually run (the lr reaches 0).
    10. Checkpoint selection (``ModelCheckpoint.monitor``): the official keeps the epoch of best *test* SumR
        (image_Retrieval_caption.py:462,479); the recipes select on ``val/sumr`` (the same R1+R5+R10 sum) and test
        that checkpoint, on purpose.
    11. Tokenizer (``data.init_args.tokenizer``): the official ``BertTokenizer`` (slow, dataset/__init__.py:13-19);
        ours loads the same vocabulary with ``AutoTokenizer`` (the fast implementation).
    12. Ranking ties (no flag): the official ranks with ``np.argsort`` (image_Retrieval_caption.py:268), ties in
        arbitrary order; ``RetrievalMetric`` counts strictly higher scores.
    13. Random streams (no flag): seeds 42 + rank (image_Retrieval_caption.py:334), the sampler's permutations and
        the dropout draws differ.
    14. Data layout (``data.init_args.descriptions``, ``id_lists``): descriptions are ``<visual_id>.txt``, where the
        official MSCOCO loader names them after the image file of ``image_ids.txt`` (retrieval_dataset.py:71-72);
        an evaluation gallery is the split's id list when the data preset names one, where upstream it is the
        items of the query caption file (retrieval_dataset.py:208-221); they agree when every listed item has a
        query caption.

    Matched through the data and trainer settings of the recipes (``configs/fragments/leccr.yaml``): the text policy
    (``data.init_args.normalization: leccr`` = ``pre_caption``, dataset/utils.py:31-55, not applied to the
    descriptions), the lengths (``data.init_args.max_length: {train: null, eval: 200}``), every video frame
    (``max_frames: null``), ``drop_last``, no early stopping.
    """

    required_roles = ("source", "target", "description")
    provides_temperature = True

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        text_model: str = "tiny",
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        text_max_positions: int = 128,
        text_pooling: str = "cls",
        visual_encoder: str = "tokens",
        timm_model: str = "resnet18",
        timm_checkpoint: str | None = None,
        timm_kwargs: dict | None = None,
        visual_width: int | None = None,
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
        slot_vision_gather: bool = True,
        eval_scoring: str = "global",
        fusion_weights: tuple[float, float] = (0.9, 0.1),
        parity_dstl_orientation: bool = False,
        parity_slot_vision_norm: bool = False,
        parity_slot_vision_padding: bool = False,
        parity_gather_gradient: bool = False,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if eval_scoring not in EVAL_SCORINGS:
            raise ValueError(f"eval_scoring {eval_scoring!r}: expected one of {EVAL_SCORINGS}")
        if not 0.0 <= dstl_weight <= 1.0:
            raise ValueError(f"dstl_weight: expected a value in [0, 1], got {dstl_weight}")
        self.text = HFTextEncoder(
            text_model, vocab_size, text_hidden, text_layers, text_heads, text_max_positions, pooling=text_pooling
        )
        if visual_encoder not in VISUAL_ENCODERS:
            raise ValueError(f"visual_encoder {visual_encoder!r}: expected one of {VISUAL_ENCODERS}")
        self.visual = build_visual_encoder(
            visual_encoder,
            visual_dim,
            hidden=visual_width,
            heads=attention_heads,
            dropout=dropout,
            timm_model=timm_model,
            timm_checkpoint=timm_checkpoint,
            timm_kwargs=timm_kwargs,
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
        self.objective = self.attach_objective(objective if objective is not None else MethodTemperatureInfoNCE())

    # --- encoders -----------------------------------------------------------------------------------------------
    def tau(self) -> torch.Tensor:
        """The learnable temperature (clamped only when ``temperature_bounds`` is set)."""
        bounds = self.hparams.temperature_bounds
        return self.temperature if bounds is None else self.temperature.clamp(*bounds)

    def encode_tokens(self, tokens: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, L, H], pooled [B, H]) of the text encoder; a batch longer than its position table is an error
        (the official training never truncates, image_Retrieval_caption.py:47,58: texts must fit the model)."""
        length, positions = tokens["input_ids"].shape[1], self.text.backbone.config.max_position_embeddings
        if length > positions:
            raise ValueError(
                f"a text batch has {length} tokens, more than the {positions} positions of the text model; set "
                "data.init_args.max_length (e.g. {train: <= positions, eval: 200})"
            )
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """t = norm(W_t pool(text states)) [B, embed_dim]."""
        _, pooled = self.encode_tokens(tokens)
        return F.normalize(self.text_head(pooled), dim=-1)

    def description_slots(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S0 = CA_q(Q, W_z Z) [B, N, d] from the description tokens (Z under no_grad unless description_grad)."""
        with torch.set_grad_enabled(self.hparams.description_grad and torch.is_grad_enabled()):
            states, _ = self.encode_tokens(tokens)
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
        tokens, mask, _ = self.visual(batch["visual"], batch["visual_mask"])
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

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``RetrievalMethod.gather``; with ``parity_gather_gradient`` the gradient through it is divided by the
        world size W, what the official AllGather (local slice back) and DDP's mean give (xvlm.py:50-67)."""
        gathered = super().gather(x)
        if self.hparams.parity_gather_gradient and gathered.requires_grad and is_distributed():
            return _ScaleGradient.apply(gathered, 1.0 / dist.get_world_size())
        return gathered

    # --- losses -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        hp = self.hparams
        tau = self.tau()
        visual = self.encode_visual(batch)
        source_local = self.embed_text(batch["text"]["source"])
        target_local = self.embed_text(batch["text"]["target"])
        step = self.alignment_step(
            batch, {"visual": visual["global"], "source": source_local, "target": target_local}, temperature=tau
        )
        v, source, target = (step.embeddings[role] for role in ("visual", "source", "target"))
        positives = step.positives
        # §3.3 item 1: multi-positive InfoNCE on (v, t^s), (v, t^t), (t^s, t^t); scores are [texts, visuals].
        loss_vs = self.objective(step.pair("source", "visual"))
        loss_vt = self.objective(step.pair("target", "visual"))
        loss_st = self.objective(step.pair("target", "source"))
        # §3.3 item 2: slot-text max-similarity matching, per process, diagonal labels.
        loss_c = slot_text_matching(visual["local"], source_local, tau) + slot_text_matching(
            visual["local"], target_local, tau
        )
        # §3.3 item 3: slot-vision alignment of S0 with the tokens X before the interaction (one summary per item).
        norm = "across" if hp.parity_slot_vision_norm else "vector"
        token_mask = None if hp.parity_slot_vision_padding else visual["mask"]
        slot_summary = slot_vision_summary(self.slot_proj(visual["slots"]), None, norm)
        token_summary = slot_vision_summary(self.token_proj(visual["tokens"]), token_mask, norm)
        if hp.slot_vision_gather:
            slot_summary, token_summary, cv_positives = self.gather(slot_summary), self.gather(token_summary), positives
        else:
            cv_positives = self.positives(batch["visual_index"])
        loss_cv = slot_vision_alignment(slot_summary, token_summary, cv_positives)
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
