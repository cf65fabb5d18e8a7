"""The Moment-DETR / QD-DETR encoder-decoder stack (spec grounding_methods §1), without Lightning.

Pieces: input projections (LN -> Dropout -> Linear -> ReLU blocks), the video sine position encoding, post-norm
encoder layers (positions added to queries and keys only), the T2V cross-attention encoder of QD-DETR with a global
token, and a decoder that runs either on learned query embeddings (Moment-DETR) or on (c, w) anchors refined layer
by layer in inverse-sigmoid space (DAB-DETR / QD-DETR), returning every layer's outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``n_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def input_projection(in_dim: int, hidden_dim: int, n_layers: int = 2, dropout: float = 0.5) -> nn.Sequential:
    """``n_layers`` blocks LayerNorm -> Dropout -> Linear -> ReLU, no ReLU on the last (§1.1)."""
    blocks: list[nn.Module] = []
    for i in range(n_layers):
        blocks += [nn.LayerNorm(in_dim if i == 0 else hidden_dim), nn.Dropout(dropout)]
        blocks.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim))
        if i < n_layers - 1:
            blocks.append(nn.ReLU())
    return nn.Sequential(*blocks)


def sine_position_encoding(mask: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[B, T, dim] sine/cosine of the cumulative count of valid clips normalised to (0, 2 pi] (§1.1)."""
    pos = mask.float().cumsum(1)
    pos = pos / (pos[:, -1:] + 1e-6) * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(dim, device=mask.device) // 2) / dim)
    angles = pos[..., None] / freq
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def anchor_sine_embedding(spans: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[..., 2 * dim] sine embedding of (c, w) anchors in [0, 1], ``dim`` values per coordinate (§1.2)."""
    freq = temperature ** (2 * (torch.arange(dim, device=spans.device) // 2) / dim)
    angles = spans[..., None] * 2 * math.pi / freq
    emb = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)
    return emb.flatten(-2)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [eps, 1 - eps]."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class _FFN(nn.Module):
    """Post-norm feed-forward sub-layer: norm(x + W2 dropout(relu(W1 x)))."""

    def __init__(self, d: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d))
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.net(x)))


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer; ``pos`` is added to queries and keys, not values."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)
        self.ffn = _FFN(d, ffn_dim, dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = x + pos
        x = self.norm(x + self.drop(self.attn(qk, qk, x, key_padding_mask=pad, need_weights=False)[0]))
        return self.ffn(x)


class DETRCrossAttentionLayer(nn.Module):
    """Post-norm cross-attention layer (QD-DETR T2V): ``x`` attends to ``memory``, then an FFN."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)
        self.ffn = _FFN(d, ffn_dim, dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        out = self.attn(x + pos, memory, memory, key_padding_mask=memory_pad, need_weights=False)[0]
        return self.ffn(self.norm(x + self.drop(out)))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention over queries, cross-attention to the memory, FFN."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross = DETRCrossAttentionLayer(d, heads, ffn_dim, dropout)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
        memory_pos: torch.Tensor,
    ) -> torch.Tensor:
        qk = tgt + query_pos
        tgt = self.norm(tgt + self.drop(self.self_attn(qk, qk, tgt, need_weights=False)[0]))
        return self.cross(tgt, memory + memory_pos, memory_pad, query_pos)


class JointEncoder(nn.Module):
    """Moment-DETR encoder: self-attention over [video; text] with a joint padding mask, zero text positions."""

    def __init__(self, d: int, heads: int, layers: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn_dim, dropout) for _ in range(layers))

    def forward(self, video, video_mask, text, text_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the memory [B, T + Lq, d], its validity mask and its position encoding."""
        x = torch.cat([video, text], dim=1)
        mask = torch.cat([video_mask, text_mask], dim=1)
        pos = torch.cat([sine_position_encoding(video_mask, video.shape[-1]), torch.zeros_like(text)], dim=1)
        for layer in self.layers:
            x = layer(x, ~mask, pos)
        return x, mask, pos


class T2VEncoder(nn.Module):
    """QD-DETR encoder: ``t2v_layers`` video-to-text cross-attention layers, then self-attention over [global
    token; video] (§1.2). Text tokens are dropped after the T2V stage."""

    def __init__(self, d: int, heads: int, t2v_layers: int, layers: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.t2v = nn.ModuleList(DETRCrossAttentionLayer(d, heads, ffn_dim, dropout) for _ in range(t2v_layers))
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn_dim, dropout) for _ in range(layers))
        self.global_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.global_pos = nn.Parameter(torch.zeros(1, 1, d))

    def forward(self, video, video_mask, text, text_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the memory [B, 1 + T, d] (global token first), its validity mask and positions."""
        pos = sine_position_encoding(video_mask, video.shape[-1])
        for layer in self.t2v:
            video = layer(video, text, ~text_mask, pos)
        b = video.shape[0]
        x = torch.cat([self.global_token.expand(b, -1, -1), video], dim=1)
        mask = torch.cat([video_mask.new_ones(b, 1), video_mask], dim=1)
        pos = torch.cat([self.global_pos.expand(b, -1, -1), pos], dim=1)
        for layer in self.layers:
            x = layer(x, ~mask, pos)
        return x, mask, pos


class SpanDecoder(nn.Module):
    """DETR decoder over ``num_queries`` queries; returns per-layer hidden states [L, B, Q, d] and spans.

    ``anchor_mode=False`` (Moment-DETR): learned query positions, spans = sigmoid(span_head(h)).
    ``anchor_mode=True`` (DAB / QD-DETR): the caller passes unsigmoided (c, w) anchors [B, Q, 2]; each layer uses
    MLP(sine(anchor)) as query position, predicts a delta, and the anchor becomes
    sigmoid(delta + inverse_sigmoid(anchor)), detached before the next layer (with ``refine=False`` every layer
    keeps the input anchors as its reference). ``extra_pos`` [B, Q, d], RGTR's static anchors, is added to every
    layer's query positions.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        layers: int,
        ffn_dim: int,
        dropout: float,
        num_queries: int,
        anchor_mode: bool,
        refine: bool = True,
    ) -> None:
        super().__init__()
        self.refine = refine
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.anchor_mode = anchor_mode
        self.span_head = MLP(d, d, 2, 3)
        if anchor_mode:
            self.ref_point_head = MLP(d, d, d, 2)
        else:
            self.query_pos = nn.Embedding(num_queries, d)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        memory_pos: torch.Tensor,
        anchors: torch.Tensor | None = None,
        extra_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, d = memory.shape[0], memory.shape[-1]
        if self.anchor_mode:
            if anchors is None:
                raise ValueError("SpanDecoder in anchor mode needs anchors [B, Q, 2]")
            ref = anchors.sigmoid()
            tgt = memory.new_zeros(b, anchors.shape[1], d)
        else:
            ref = None
            tgt = memory.new_zeros(b, self.query_pos.num_embeddings, d)
        hidden, spans = [], []
        for layer in self.layers:
            pos = self.ref_point_head(anchor_sine_embedding(ref, d // 2)) if ref is not None else self.query_pos.weight
            pos = pos.expand(b, -1, -1) if pos.dim() == 2 else pos
            if extra_pos is not None:
                pos = pos + extra_pos
            tgt = layer(tgt, pos, memory, ~memory_mask, memory_pos)
            h = self.norm(tgt)
            if ref is not None:
                new_ref = (self.span_head(h) + inverse_sigmoid(ref)).sigmoid()
                spans.append(new_ref)
                if self.refine:
                    ref = new_ref.detach()
            else:
                spans.append(self.span_head(h).sigmoid())
            hidden.append(h)
        return torch.stack(hidden), torch.stack(spans)


class GlobalSaliencyHead(nn.Module):
    """QD-DETR saliency (§1.2): s_i = <P1 v_i, P2 g> / sqrt(d) for clips v_i and the global token g."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.clip_proj, self.global_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """[B, T] from a [B, 1 + T, d] memory whose first row is the global token."""
        clips = self.clip_proj(memory[:, 1:])
        glob = self.global_proj(memory[:, :1])
        return (clips * glob).sum(-1) / math.sqrt(memory.shape[-1])
