"""Visual encoders: cached global features, frame or token sequences, and timm backbones on raw images.

Every encoder maps a batch ``visual`` [B, T, D] (pixels [B, 3, H, W] for ``timm``) with ``mask`` [B, T] to an
``EncodedVisual``: the output tokens [B, T', d_tokens], their mask [B, T'] and a pooled vector [B, out_dim] (an
encoder's ``out_dim`` is the pooled width; ``token_dim``, where it differs, the width of its tokens). Methods choose
one by name through ``build_visual_encoder`` (``visual_encoder: mlp`` in a config), so a new encoder is one registry
entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from leccr_lightning.modules.nrccr_encoders import FrameAttention, LinearFeature
from leccr_lightning.modules.pooling import masked_mean


class EncodedVisual(NamedTuple):
    """Output tokens [B, T, d_tokens], their validity mask [B, T] (bool) and a pooled vector [B, out_dim]."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


class FeatureMLP(nn.Module):
    """A cached global feature [B, 1, D] (or the masked mean of frames) through ``LN -> Dropout -> Linear -> ReLU``
    (NRCCR's LinearLayer, ccr_methods §2.1), pooled by the masked mean."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.layer = nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        tokens = self.layer(visual)
        return EncodedVisual(tokens, mask.bool(), masked_mean(tokens, mask))


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

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        tokens = self.project(visual, mask).tokens
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        tokens = self.norm(tokens + self.positions(positions))
        tokens = self.blocks(tokens, src_key_padding_mask=~mask.bool())
        return EncodedVisual(tokens, mask.bool(), masked_mean(tokens, mask))


class TokenProjection(nn.Module):
    """Visual tokens as they are (``width=None``: LECCR's image path, CLIP tokens straight into the slot
    interaction) or through Linear(D -> width); pooled by the masked mean."""

    def __init__(self, in_dim: int, width: int | None = None):
        super().__init__()
        self.out_dim = width or in_dim
        self.project = nn.Identity() if width is None else nn.Linear(in_dim, width)

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        tokens = self.project(visual)
        return EncodedVisual(tokens, mask.bool(), masked_mean(tokens, mask))


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


class TimmTokens(nn.Module):
    """The token map of a timm backbone on pixels (all tokens valid), then ``TokenProjection`` (LECCR end to end:
    the backbone is fine-tuned, its tokens feed the slot interaction; a CNN map has no [CLS] token)."""

    def __init__(
        self,
        in_dim: int,
        width: int | None,
        model_name: str = "resnet18",
        checkpoint: str | None = None,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        if in_dim != 3:
            raise ValueError(f"visual_encoder 'timm' reads RGB pixels (visual_dim 3), got visual_dim={in_dim}")
        self.backbone = TimmImageEncoder(model_name, checkpoint, model_kwargs=model_kwargs)
        self.project = TokenProjection(self.backbone.out_dim, width)
        self.out_dim = self.project.out_dim

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        if visual.ndim != 4:
            raise ValueError(
                f"visual_encoder 'timm' expects pixel batches [B, 3, H, W] (data features kind 'images'), "
                f"got shape {tuple(visual.shape)}"
            )
        tokens, _ = self.backbone(visual)
        valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return self.project(tokens, valid)


@dataclass(frozen=True)
class VisualSettings:
    """What a method tells every visual encoder kind (its ``visual_*`` arguments); each kind reads what it needs."""

    hidden: int | None = None
    heads: int = 8
    max_frames: int = 80
    dropout: float = 0.1
    timm_model: str = "resnet18"
    timm_checkpoint: str | None = None
    timm_kwargs: dict | None = None


def _mlp(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return FeatureMLP(visual_dim, s.hidden, s.dropout, **options)


def _frames(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return FrameTransformer(
        visual_dim, s.hidden, num_heads=s.heads, max_frames=s.max_frames, dropout=s.dropout, **options
    )


def _tokens(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return TokenProjection(visual_dim, s.hidden, **options)


def _self_attention(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    from leccr_lightning.modules.slots import FrameSelfAttention  # LECCR's layer; slots imports this module

    return FrameSelfAttention(visual_dim, s.hidden, num_heads=s.heads, dropout=s.dropout, **options)


def _timm(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return TimmTokens(visual_dim, s.hidden, s.timm_model, s.timm_checkpoint, s.timm_kwargs, **options)


def _visern(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    from leccr_lightning.modules.visern import ViSERNVideoEncoder

    return ViSERNVideoEncoder(visual_dim, **({"width": s.hidden} if s.hidden else {}), **options)


def _rivrl(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    from leccr_lightning.modules.rivrl import PreviewIntensiveEncoder

    return PreviewIntensiveEncoder(visual_dim, **options)


def _linear(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return LinearFeature(visual_dim, s.hidden, **options)


def _linear_relu(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return LinearFeature(visual_dim, s.hidden, relu=True, **options)


def _frame_attention(visual_dim: int, s: VisualSettings, options: dict) -> nn.Module:
    return FrameAttention(
        visual_dim, s.hidden, num_heads=s.heads, max_frames=s.max_frames, dropout=s.dropout, **options
    )


VISUAL_ENCODERS: dict[str, Callable[[int, VisualSettings, dict], nn.Module]] = {
    "mlp": _mlp,
    "frames": _frames,
    "tokens": _tokens,
    "self_attention": _self_attention,
    "timm": _timm,
    "visern": _visern,
    "rivrl": _rivrl,
    "linear": _linear,
    "linear_relu": _linear_relu,
    "frame_attention": _frame_attention,
}


def build_visual_encoder(
    kind: str,
    visual_dim: int,
    hidden: int | None = None,
    heads: int = 8,
    max_frames: int = 80,
    dropout: float = 0.1,
    timm_model: str = "resnet18",
    timm_checkpoint: str | None = None,
    timm_kwargs: dict | None = None,
    options: dict | None = None,
) -> nn.Module:
    """The visual encoder ``kind`` over ``visual_dim``-wide inputs; each kind reads the settings it needs, and
    ``options`` (a method's ``visual_options``) are further keyword arguments of that kind's module (an unknown one
    is a TypeError naming it):

    ``mlp`` (hidden, dropout): a cached global feature through NRCCR's LinearLayer; ``frames`` (hidden, heads,
    max_frames, dropout): NRCCR's frame transformer; ``tokens`` (hidden: the projection width, None = identity):
    visual tokens as they are; ``self_attention`` (hidden, heads, dropout; ``num_layers``): LECCR's frame
    self-attention layer (``modules.slots.FrameSelfAttention``); ``timm`` (timm_model, timm_checkpoint, timm_kwargs,
    hidden): a timm backbone's tokens; ``visern`` (hidden: the region width; ``ViSERNVideoEncoder``'s arguments, e.g.
    ``regions_per_frame``): ViSERN's region reasoning + multi-level frame encoder over region features; ``rivrl``
    (``PreviewIntensiveEncoder``'s sizes: preview_size, intensive_dim, clip_kernel_sizes...): RIVRL's previewing and
    intensive-reading branches, pooled to [p; r] (``modules/rivrl.py``); ``linear`` / ``linear_relu`` (hidden):
    NRCCR's CLIP and ResNet image paths; ``frame_attention`` (hidden, heads, max_frames, dropout; ``qk_dim``):
    NRCCR's video encoder (``modules/nrccr_encoders.py``).
    """
    if kind not in VISUAL_ENCODERS:
        raise ValueError(f"unknown visual_encoder {kind!r}; expected one of {sorted(VISUAL_ENCODERS)}")
    if kind in ("mlp", "frames", "linear", "linear_relu", "frame_attention") and hidden is None:
        raise ValueError(f"visual_encoder {kind!r} needs a hidden width")
    settings = VisualSettings(hidden, heads, max_frames, dropout, timm_model, timm_checkpoint, timm_kwargs)
    return VISUAL_ENCODERS[kind](visual_dim, settings, dict(options or {}))
