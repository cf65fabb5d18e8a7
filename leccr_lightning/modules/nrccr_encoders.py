"""NRCCR's visual encoders (ccr_methods §2.1; LiJiaBei-7/nrccr:model.py:82-150), registered in
``modules.visual_encoders`` as ``linear``, ``linear_relu`` and ``frame_attention``.

Each returns the shared ``EncodedVisual`` (output tokens, mask, masked-mean pooled vector); NRCCR pools the tokens
itself so that its ``unmasked_mean`` parity flag also covers the visual side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from leccr_lightning.modules.attention import SequenceAttentionHead
from leccr_lightning.modules.pooling import masked_mean

if TYPE_CHECKING:
    from leccr_lightning.modules.visual_encoders import EncodedVisual


def _encoded(tokens: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
    # imported here: modules.visual_encoders imports this module for its registry
    from leccr_lightning.modules.visual_encoders import EncodedVisual

    return EncodedVisual(tokens, mask.bool(), masked_mean(tokens, mask))


class LinearFeature(nn.Module):
    """A cached global feature through Linear(D -> hidden), with a ReLU when ``relu``.

    ``relu=False``: the CLIP path, Linear(512 -> 1024) on ``encode_image`` (``image_encoding_clip``, model.py:134-150);
    ``relu=True``: the ResNet-152 path, ReLU(Linear(2048 -> 2048)) (``image_encoding``, model.py:121-129).
    """

    def __init__(self, in_dim: int, hidden: int, relu: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_dim, hidden)
        self.relu = relu
        self.out_dim = hidden

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        tokens = self.linear(visual)
        return _encoded(torch.relu(tokens) if self.relu else tokens, mask)


class FrameAttention(nn.Module):
    """NRCCR's video encoder: LinearLayer(D -> hidden) -> LN(x + pos) -> one self-attention block (Q/K ``qk_dim``,
    V ``hidden``, no feed-forward) over the frames (``video_transformer_encoding``, model.py:82-117). Paper defaults:
    hidden 1024, 8 heads, qk_dim 512, 80 positions, dropout 0.1."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 1024,
        num_heads: int = 8,
        qk_dim: int = 512,
        max_frames: int = 80,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.head = SequenceAttentionHead(in_dim, hidden, num_heads, qk_dim, max_frames, dropout)
        self.out_dim = hidden

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        return _encoded(self.head(self.head.prepare(visual), mask), mask)
