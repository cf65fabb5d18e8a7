"""Visual encoders: cached global features, frame-sequence transformers, and timm backbones on raw images."""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.pooling import masked_mean


class FeatureMLP(nn.Module):
    """A cached global feature [B, 1, D] (or the masked mean of frames) through ``LN -> Dropout -> Linear -> ReLU``
    (NRCCR's LinearLayer, ccr_methods §2.1); returns (tokens [B, T, H], pooled [B, H])."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.layer = nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.layer(visual)
        return tokens, masked_mean(tokens, mask)


class FrameTransformer(nn.Module):
    """NRCCR video branch: LinearLayer, trainable positions (max ``max_frames``), ``num_layers`` self-attention
    blocks with a key-padding mask, masked mean pooling (ccr_methods §2.1)."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_layers: int = 1,
        num_heads: int = 8,
        max_frames: int = 80,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.project = FeatureMLP(in_dim, hidden, dropout)
        self.positions = nn.Embedding(max_frames, hidden)
        self.norm = nn.LayerNorm(hidden)
        layer = nn.TransformerEncoderLayer(hidden, num_heads, 4 * hidden, dropout, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_dim = hidden

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, _ = self.project(visual, mask)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        tokens = self.norm(tokens + self.positions(positions))
        tokens = self.blocks(tokens, src_key_padding_mask=~mask.bool())
        return tokens, masked_mean(tokens, mask)


class TimmImageEncoder(nn.Module):
    """A timm backbone on raw images [B, 3, H, W] (end-to-end fine-tuning); weights only from a local file.

    ``checkpoint`` is a local ``.safetensors``/``.pth`` loaded through ``pretrained_cfg_overlay`` (which drops a
    classifier head); without it the backbone is randomly initialised. ``model_kwargs`` go to ``timm.create_model``
    (e.g. ``{"img_size": 384}`` for a ViT at LECCR's 384 px, whose position embeddings timm interpolates).
    Returns (tokens [B, N, C], pooled [B, C]).
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        checkpoint: str | None = None,
        trainable: bool = True,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        import timm

        kwargs = dict(model_kwargs or {})
        if checkpoint:
            kwargs["pretrained_cfg_overlay"] = {"file": checkpoint}
        self.backbone = timm.create_model(model_name, pretrained=checkpoint is not None, num_classes=0, **kwargs)
        self.backbone.requires_grad_(trainable)
        self.out_dim = int(self.backbone.num_features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(images)
        tokens = features.flatten(2).transpose(1, 2) if features.ndim == 4 else features
        return tokens, self.backbone.forward_head(features, pre_logits=True)
