"""The Moment-DETR and QD-DETR transformer stacks (spec grounding_methods §1), without Lightning.

Shared pieces: input projections (LN -> Dropout -> Linear -> ReLU blocks), the video sine position encoding, the
(c, w) sine embedding of anchors, post-norm self-attention encoder layers (positions added to queries and keys
only) and Xavier-uniform initialisation of every matrix of a transformer (both official ``Transformer`` classes
re-initialise their parameters that way, moment_detr/transformer.py:44-47, qd_detr/transformer.py:101-104).

Moment-DETR (jayleicn/moment_detr:moment_detr/transformer.py): ``JointEncoder`` over [video; text] and
``QueryDecoder`` over learned query positions. QD-DETR (wjun0830/QD-DETR:qd_detr/transformer.py): ``T2VEncoder``
(video-to-text cross-attention, then self-attention over [global token; video]) and ``AnchorDecoder``, the
DAB-DETR decoder over (c, w) anchors with conditional cross-attention, refined layer by layer. Masks are boolean
with True = valid; every module returns per-layer outputs stacked on a leading axis where it has layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "prelu")


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
    """[B, T, dim] sine/cosine of the cumulative count of valid clips normalised to (0, 2 pi], in float32 as
    upstream (moment_detr/position_encoding.py:51-72; §1.1)."""
    pos = mask.float().cumsum(1)
    pos = pos / (pos[:, -1:] + 1e-6) * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(dim, device=mask.device) // 2) / dim)
    angles = pos[..., None] / freq
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def anchor_sine_embedding(spans: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[..., 2 * dim] sine embedding of (c, w) anchors in [0, 1], ``dim`` values per coordinate, center first
    (qd_detr/transformer.py:40-55, where ``dim`` is fixed to 128 = hidden 256 / 2)."""
    freq = temperature ** (2 * (torch.arange(dim, device=spans.device) // 2) / dim)
    angles = spans[..., None] * 2 * math.pi / freq
    emb = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)
    return emb.flatten(-2)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(max(x, eps) / max(1 - x, eps)) with x clamped to [0, 1] (qd_detr/model.py:16-20)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform re-initialisation of every parameter with two or more dimensions of ``module``."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


def activation_layer(name: str) -> nn.Module:
    """``relu`` (Moment-DETR) or a learnable ``prelu`` (QD-DETR, qd_detr/transformer.py:776, 788-789)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return nn.ReLU() if name == "relu" else nn.PReLU()


class FeedForward(nn.Module):
    """W2 Dropout(act(W1 x)), the transformer FFN without its residual."""

    def __init__(self, d: int, ffn_dim: int, dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d, ffn_dim), nn.Linear(ffn_dim, d)
        self.activation, self.dropout = activation_layer(activation), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer, ``pos`` added to queries and keys, not values (transformer.py:233-246):
    x = LN1(x + Drop(MHA(x + p, x + p, x))); x = LN2(x + Drop(FFN(x)))."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x, pos [B, L, d], mask [B, L] (True = valid) -> [B, L, d]."""
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, key_padding_mask=~mask, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self.ffn(x)))


# --- Moment-DETR -------------------------------------------------------------------------------------------------
class JointEncoder(nn.Module):
    """Moment-DETR encoder: self-attention layers over [video; text] with a joint mask, zero text positions."""

    def __init__(self, d: int, heads: int, layers: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn_dim, dropout) for _ in range(layers))
        xavier_init_(self)

    def forward(
        self, video: torch.Tensor, video_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The memory [B, T + Lq, d], its mask and its position encoding (moment_detr/model.py:99-108)."""
        x = torch.cat([video, text], dim=1)
        mask = torch.cat([video_mask, text_mask], dim=1)
        video_pos = sine_position_encoding(video_mask, video.shape[-1]).to(video)
        pos = torch.cat([video_pos, torch.zeros_like(text)], dim=1)
        for layer in self.layers:
            x = layer(x, mask, pos)
        return x, mask, pos


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer (moment_detr/transformer.py:296-317): self-attention over the queries, then
    cross-attention with queries t + q_pos, keys memory + pos and values memory (no positions), then the FFN."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        memory_pos: torch.Tensor,
    ) -> torch.Tensor:
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt, need_weights=False)[0]))
        attended = self.cross_attn(
            tgt + query_pos, memory + memory_pos, memory, key_padding_mask=~memory_mask, need_weights=False
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class QueryDecoder(nn.Module):
    """Moment-DETR decoder: zero targets + learned query positions [Q, d] given by the caller, a shared final
    LayerNorm applied to every layer's output (transformer.py:117-146); returns hidden states [L, B, Q, d]."""

    def __init__(self, d: int, heads: int, layers: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        xavier_init_(self)

    def forward(
        self, query_pos: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        query_pos = query_pos.expand(memory.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        hidden = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, memory_mask, memory_pos)
            hidden.append(self.norm(tgt))
        return torch.stack(hidden)


# --- QD-DETR -----------------------------------------------------------------------------------------------------
class T2VLayer(nn.Module):
    """QD-DETR video-to-text cross-attention layer (qd_detr/transformer.py:406-441): clips (plus their positions)
    query the text tokens (keys and values without positions), with this residual order:
    x = v + Drop(MHA(v + p, t, t)); out = LN2(x + Drop(FFN(LN1(x))))."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float, activation: str = "prelu") -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d, ffn_dim, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, video: torch.Tensor, video_pos: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        attended = self.cross_attn(video + video_pos, text, text, key_padding_mask=~text_mask, need_weights=False)[0]
        x = video + self.dropout1(attended)
        return self.norm2(x + self.dropout2(self.ffn(self.norm1(x))))


class T2VEncoder(nn.Module):
    """QD-DETR encoder (qd_detr/transformer.py:107-142, model.py:122-132): ``t2v_layers`` T2V layers, then
    ``layers`` self-attention layers over [global token; video] with positions [global position; sine]; the text
    is dropped after the T2V stage. The global token and its position are N(0, 1) vectors (model.py:87-88)."""

    def __init__(
        self, d: int, heads: int, t2v_layers: int, layers: int, ffn_dim: int, dropout: float, activation: str = "prelu"
    ) -> None:
        super().__init__()
        self.t2v = nn.ModuleList(T2VLayer(d, heads, ffn_dim, dropout, activation) for _ in range(t2v_layers))
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn_dim, dropout, activation) for _ in range(layers))
        xavier_init_(self)
        self.global_token = nn.Parameter(torch.randn(d))
        self.global_pos = nn.Parameter(torch.randn(d))

    def forward(
        self, video: torch.Tensor, video_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clip memory [B, T, d], global-token memory [B, d] and the clips' position encoding [B, T, d]."""
        pos = sine_position_encoding(video_mask, video.shape[-1]).to(video)
        for layer in self.t2v:
            video = layer(video, pos, text, text_mask)
        b = video.shape[0]
        x = torch.cat([self.global_token.expand(b, 1, -1), video], dim=1)
        mask = torch.cat([video_mask.new_ones(b, 1), video_mask], dim=1)
        full_pos = torch.cat([self.global_pos.expand(b, 1, -1), pos], dim=1)
        for layer in self.layers:
            x = layer(x, mask, full_pos)
        return x[:, 1:], x[:, 0], pos


class ProjectionFreeAttention(nn.Module):
    """Multi-head attention on already projected queries, keys and values, with only an output projection
    (DAB-DETR's attention, qd_detr/attention.py:87-114, 281-387): per head softmax(q k^T / sqrt(E / H)) v, E the
    query width, dropout on the attention weights; the output projection's bias starts at 0."""

    def __init__(self, heads: int, value_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.out_proj = nn.Linear(value_dim, value_dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query [B, Lq, E], key [B, Lk, E], value [B, Lk, Dv], key_mask [B, Lk] (True = valid) -> [B, Lq, Dv]."""

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        mask = None if key_mask is None else key_mask[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(split(query), split(key), split(value), mask, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).flatten(-2))


def _concat_per_head(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., d] and [..., d] -> [..., 2d] with head h holding [a_h; b_h] (qd_detr/transformer.py:638-644)."""
    return torch.cat([a.unflatten(-1, (heads, -1)), b.unflatten(-1, (heads, -1))], dim=-1).flatten(-2)


class ConditionalDecoderLayer(nn.Module):
    """DAB-DETR decoder layer (qd_detr/transformer.py:536-657): self-attention with separate content and position
    projections; conditional cross-attention whose per-head queries are [content; projected sine embedding of the
    anchor] and keys [content; projected memory position] (the first layer also adds the query position to the
    content query and the memory position to the content key); post-norm FFN."""

    def __init__(
        self, d: int, heads: int, ffn_dim: int, dropout: float, activation: str = "prelu", is_first: bool = False
    ) -> None:
        super().__init__()
        self.heads, self.is_first = heads, is_first
        self.sa_qcontent_proj, self.sa_qpos_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.sa_kcontent_proj, self.sa_kpos_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.sa_v_proj = nn.Linear(d, d)
        self.self_attn = ProjectionFreeAttention(heads, d, dropout)
        self.ca_qcontent_proj = nn.Linear(d, d)
        self.ca_qpos_proj = nn.Linear(d, d) if is_first else None  # only the first layer (transformer.py:228-230)
        self.ca_kcontent_proj, self.ca_kpos_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.ca_v_proj, self.ca_qpos_sine_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.cross_attn = ProjectionFreeAttention(heads, d, dropout)
        self.ffn = FeedForward(d, ffn_dim, dropout, activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        query_sine: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        memory_pos: torch.Tensor,
    ) -> torch.Tensor:
        """tgt, query_pos, query_sine [B, Q, d]; memory, memory_pos [B, T, d]; memory_mask [B, T] -> [B, Q, d]."""
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, self.sa_v_proj(tgt))))
        q, k, k_pos = self.ca_qcontent_proj(tgt), self.ca_kcontent_proj(memory), self.ca_kpos_proj(memory_pos)
        if self.is_first:
            q, k = q + self.ca_qpos_proj(query_pos), k + k_pos
        q = _concat_per_head(q, self.ca_qpos_sine_proj(query_sine), self.heads)
        k = _concat_per_head(k, k_pos, self.heads)
        tgt = self.norm2(tgt + self.dropout2(self.cross_attn(q, k, self.ca_v_proj(memory), memory_mask)))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class AnchorDecoder(nn.Module):
    """DAB-DETR decoder of QD-DETR over (c, w) anchors (qd_detr/transformer.py:179-319).

    Per layer l with reference r_l (r_0 = sigmoid(anchors)): sine embedding e = sine(r_l) (d/2 per coordinate),
    query position p = MLP(e) (+ ``extra_pos``, RGTR's static anchors), e scaled by MLP(h) from the second layer on
    (``cond_elewise``) and by sigma(MLP(h)) / w_l (width-modulated attention); h <- layer(h, p, e); with ``refine``
    r_{l+1} = sigmoid(bbox_embed(h) + inverse_sigmoid(r_l)), detached as the next layer's input but returned with
    its gradient (without ``refine`` every layer keeps r_0). ``bbox_embed``'s last layer starts with
    zero bias; its weight is Xavier-initialised like every matrix of the decoder (the official zero weight is
    overwritten by the transformer's re-initialisation, transformer.py:93, 219-220). Returns the normalised hidden
    states [L, B, Q, d] and each layer's input reference [L, B, Q, 2].
    """

    def __init__(
        self, d: int, heads: int, layers: int, ffn_dim: int, dropout: float, activation: str = "prelu"
    ) -> None:
        super().__init__()
        self.refine = True
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(d, heads, ffn_dim, dropout, activation, is_first=i == 0) for i in range(layers)
        )
        self.norm = nn.LayerNorm(d)
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(d, d, d, 2)
        self.ref_anchor_head = MLP(d, d, 1, 2)
        self.bbox_embed = MLP(d, d, 2, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        xavier_init_(self)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        memory_pos: torch.Tensor,
        anchors: torch.Tensor,
        extra_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, T, d] (mask, positions), unsigmoided anchors [B, Q, 2] -> hidden [L, B, Q, d], refs."""
        d = memory.shape[-1]
        reference = anchors.sigmoid()
        tgt = memory.new_zeros(*anchors.shape[:2], d)
        hidden, references = [], [reference]
        for i, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(reference, d // 2)
            query_pos = self.ref_point_head(sine)
            if extra_pos is not None:
                query_pos = query_pos + extra_pos
            if i > 0:
                sine = sine * self.query_scale(tgt)
            sine = sine * (self.ref_anchor_head(tgt).sigmoid() / reference[..., 1:])
            tgt = layer(tgt, query_pos, sine, memory, memory_mask, memory_pos)
            hidden.append(self.norm(tgt))
            if i == len(self.layers) - 1:
                break
            if self.refine:  # the next layer's reference; the span heads see it with its gradient (:292-296)
                refined = (self.bbox_embed(tgt) + inverse_sigmoid(reference)).sigmoid()
                references.append(refined)
                reference = refined.detach()
            else:
                references.append(reference)
        return torch.stack(hidden), torch.stack(references)


class GlobalSaliencyHead(nn.Module):
    """QD-DETR saliency (qd_detr/model.py:173): s_i = <P1 v_i, P2 g> / sqrt(d) for clips v_i and the global token g."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.clip_proj, self.global_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, clips: torch.Tensor, global_token: torch.Tensor) -> torch.Tensor:
        """clips [B, T, d], global token [B, d] -> [B, T]."""
        return (self.clip_proj(clips) * self.global_proj(global_token)[:, None]).sum(-1) / math.sqrt(clips.shape[-1])
