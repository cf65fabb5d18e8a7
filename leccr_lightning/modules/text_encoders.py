"""Hugging Face text encoders: a pretrained model from a local path, or a tiny random-init BERT for offline runs."""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.gpo import GPO
from leccr_lightning.modules.pooling import pool


def build_text_backbone(
    name_or_path: str,
    vocab_size: int | None,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    max_positions: int,
    pad_token_id: int = 0,
) -> nn.Module:
    """``"tiny"``: a random-init ``BertModel`` of the given sizes; otherwise ``AutoModel`` from a local directory or
    the local Hugging Face cache (never the network)."""
    from transformers import AutoModel, BertConfig, BertModel

    if name_or_path == "tiny":
        if vocab_size is None:
            raise ValueError("a tiny text encoder needs vocab_size (the CLI links it from data.vocab_size)")
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            max_position_embeddings=max_positions,
            pad_token_id=pad_token_id,
        )
        return BertModel(config, add_pooling_layer=False)
    try:
        return AutoModel.from_pretrained(name_or_path, local_files_only=True)
    except OSError as err:
        raise OSError(
            f"text model {name_or_path!r} is neither a local directory nor in the local Hugging Face cache; set "
            "model.init_args.text_model to a local directory (no network at run time) or to 'tiny'"
        ) from err


class HFTextEncoder(nn.Module):
    """Token states and a pooled sentence vector from a Hugging Face encoder.

    ``trainable_layers``: ``None`` trains everything; a list of layer indices trains only parameters whose name
    contains ``layer.<i>.`` (NRCCR's partial fine-tuning: layers 3-11 for images, 5-11 for videos, ccr_methods §2.1).
    """

    def __init__(
        self,
        name_or_path: str = "tiny",
        vocab_size: int | None = None,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        max_positions: int = 128,
        trainable_layers: list[int] | None = None,
        pooling: str = "mean",
        unmasked_mean: bool = False,
    ):
        super().__init__()
        self.backbone = build_text_backbone(name_or_path, vocab_size, hidden_size, num_layers, num_heads, max_positions)
        self.pooling = pooling
        self.unmasked_mean = unmasked_mean
        if trainable_layers is not None:
            keys = tuple(f"layer.{i}." for i in trainable_layers)
            for name, parameter in self.backbone.named_parameters():
                parameter.requires_grad_(any(k in name for k in keys))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (token states [B, L, H], pooled [B, H])."""
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return states, pool(states, attention_mask, self.pooling, self.unmasked_mean)


class HFGPOTextEncoder(nn.Module):
    """Hugging Face token states -> Linear(hidden, embed_dim) -> GPO -> L2 (VSE-infinity's BERT text side)."""

    def __init__(
        self,
        text_model: str,
        vocab_size: int | None,
        embed_dim: int,
        hidden: int,
        layers: int,
        heads: int,
        gpo_dim: int = 32,
    ):
        super().__init__()
        self.backbone = HFTextEncoder(text_model, vocab_size, hidden, layers, heads)
        self.fc = nn.Linear(self.backbone.hidden_size, embed_dim)
        self.gpo = GPO(gpo_dim, gpo_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states, _ = self.backbone(input_ids, attention_mask)
        return nn.functional.normalize(self.gpo(self.fc(states), attention_mask.bool()), dim=-1)
