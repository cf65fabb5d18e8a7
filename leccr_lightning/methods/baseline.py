"""The MT baseline of the CCR papers: a dual encoder trained on (visual, English) and (visual, MT target) pairs.

One shared multilingual text encoder and one visual encoder map into a joint space of unit vectors; scores are
cosine similarities. The objective is a constructor argument (``methods/objectives/``: the VSE++ hardest-negative
triplet of ccr_methods §2.2 item 1, the symmetric multi-positive InfoNCE of §3.3, or any plug-in objective):

    L = L(S(source, visual)) + target_weight * L(S(target, visual)),

with positives given by the visual index, so two captions of the same item in a batch are never negatives of each
other (``mask_same_item``; the official code ignores this, ``mask_same_item=False`` reproduces it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import InfoNCEObjective, PairObjective
from leccr_lightning.modules.heads import ProjectionHead
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import build_visual_encoder


class DualEncoder(nn.Module):
    """Text encoder + visual encoder + projection heads into a ``embed_dim`` unit sphere."""

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None,
        text_model: str,
        text_hidden: int,
        text_layers: int,
        text_heads: int,
        trainable_layers: list[int] | None,
        pooling: str,
        visual_encoder: str,
        visual_hidden: int,
        visual_heads: int,
        max_frames: int,
        visual_options: dict | None,
        embed_dim: int,
        batch_norm: bool,
        dropout: float,
    ):
        super().__init__()
        self.text = HFTextEncoder(
            text_model,
            vocab_size,
            text_hidden,
            text_layers,
            text_heads,
            trainable_layers=trainable_layers,
            pooling=pooling,
        )
        self.visual = build_visual_encoder(
            visual_encoder,
            visual_dim,
            hidden=visual_hidden,
            heads=visual_heads,
            max_frames=max_frames,
            options=visual_options,
        )
        self.text_head = ProjectionHead(self.text.hidden_size, embed_dim, batch_norm, dropout)
        self.visual_head = ProjectionHead(self.visual.out_dim, embed_dim, batch_norm, dropout)

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        _, pooled = self.text(tokens["input_ids"], tokens["attention_mask"])
        return self.text_head(pooled)

    def embed_visual(self, visual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.visual_head(self.visual(visual, mask).pooled)


class DualEncoderBaseline(RetrievalMethod):
    """MT baseline (train on English and machine-translated captions; query with human target captions).

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI.
        text_model: ``"tiny"`` (random-init BERT of ``text_hidden``/``text_layers``/``text_heads``) or a local
            Hugging Face directory (e.g. mBERT).
        trainable_layers: text layers to fine-tune (``None``: all).
        visual_encoder: a ``modules.visual_encoders`` kind: ``"mlp"`` (global features) or ``"frames"`` (frame
            transformer over a video), or any registered kind; ``visual_options`` are its further arguments.
        objective: the alignment objective of the pairs (source, visual) and (target, visual) (default: symmetric
            InfoNCE, temperature 0.07); its ``PairContext`` carries the visual, source and target embeddings.
        target_weight: weight of the MT-target term (NRCCR's ``tri_alpha`` = 0.6; 1.0 here by default).
        mask_same_item (``RetrievalMethod``): two captions of one item in a batch are never negatives.
    """

    module_arguments: tuple[str, ...] = ()
    """Further constructor arguments of a subclass that are modules (kept out of the hyper-parameters)."""

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
        visual_options: dict | None = None,
        embed_dim: int = 128,
        batch_norm: bool = False,
        dropout: float = 0.0,
        objective: PairObjective | None = None,
        target_weight: float = 1.0,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective", *self.module_arguments])
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
            visual_options,
            embed_dim,
            batch_norm,
            dropout,
        )
        self.objective = self.attach_objective(objective if objective is not None else InfoNCEObjective())

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        visual = self.encoder.embed_visual(batch["visual"], batch["visual_mask"])
        source = self.encoder.embed_text(batch["text"]["source"])
        target = self.encoder.embed_text(batch["text"]["target"])
        step = self.alignment_step(batch, {"visual": visual, "source": source, "target": target})
        loss_source = self.objective(step.pair("source", "visual"))
        loss_target = self.objective(step.pair("target", "visual"))
        return {
            "loss": loss_source + self.hparams.target_weight * loss_target,
            "source": loss_source,
            "target": loss_target,
        }

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.encoder.embed_text(batch["text"]["query"])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.encoder.embed_visual(batch["visual"], batch["visual_mask"])}
