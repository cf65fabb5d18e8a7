"""RIVRL's video side (Dong et al., TCSVT 2022; itr_video_methods §1.1, §1.9): a previewing branch and an
intensive-reading branch over the same frame features, guided by previewing-aware attention (PaA).

    previewing   p = Dropout(mean_t biGRU(X)_t)                                              [B, 2 * preview_size]
    intensive    F = ReLU(W_f X) (masked);  C_j = ReLU(Conv1d_{k_j, s_j}(F))                 [B, T, d], [B, T_j, d]
    PaA(Y, p)    a = softmax(W_q p (W_k Y)^T / sqrt(d_k) + (1 - m) * (-10^4));
                 o = LN(W_o (a W_v Y) + maxpool_t Y);  PaA = LN(o + Dropout(W_2 ReLU(W_1 o)))
    output       r = [PaA(F, p); PaA(C_1, p); ...]                                           [B, d * (1 + #convs)]

One PaA (shared weights) serves every level (LiJiaBei-7/rivrl:PaA.py:7-94, model.py:158-211). Upstream runs the
preview biGRU unpacked over the padded batch (model.py:165), leaves the clip features unmasked (model.py:184) and
counts the valid clip steps with a float division truncated toward zero (model.py:53-63), so a video's vector
depends on the longest video of its batch; by default the biGRU is packed, the clip features are masked and a
video has max(1, floor((len - k) / s) + 1) clip steps (a video shorter than the kernel is zero-padded to it);
``upstream_padding=True`` reproduces upstream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.modules.dual_encoding import GRU_POOLS, gru_states, pool_states
from leccr_lightning.modules.pooling import masked_max, masked_mean
from leccr_lightning.modules.visual_encoders import EncodedVisual

RESIDUAL_POOLINGS = ("max", "mean")


class PreviewAwareAttention(nn.Module):
    """PaA: single-head attention from the preview vector over a sequence, then a position-wise FFN.

    Args:
        query_dim: preview size (1024); dim: sequence width d (2048, ``qkv_input_dim`` = ``qkv_out_dim``);
        key_dim: d_k (512, hard-wired upstream); attention_dropout 0.2; ffn_dropout 0.1 (FFN width 2d);
        residual_pooling: ``max`` (``--pooling max``) or ``mean`` over time; eps: LayerNorm eps (1e-6).
        upstream_padding: pool the residual over padded steps too (upstream; harmless for masked ReLU inputs).
    """

    def __init__(
        self,
        query_dim: int = 1024,
        dim: int = 2048,
        key_dim: int = 512,
        attention_dropout: float = 0.2,
        ffn_dropout: float = 0.1,
        residual_pooling: str = "max",
        eps: float = 1e-6,
        upstream_padding: bool = False,
    ):
        super().__init__()
        if residual_pooling not in RESIDUAL_POOLINGS:
            raise ValueError(f"residual_pooling: expected one of {RESIDUAL_POOLINGS}, got {residual_pooling!r}")
        self.query = nn.Linear(query_dim, key_dim, bias=False)
        self.key = nn.Linear(dim, key_dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.ffn_in = nn.Linear(dim, 2 * dim)
        self.ffn_out = nn.Linear(2 * dim, dim)
        self.ffn_dropout = nn.Dropout(ffn_dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.scale = 1.0 / math.sqrt(key_dim)
        self.residual_pooling, self.upstream_padding = residual_pooling, upstream_padding

    def _residual(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.upstream_padding:
            return sequence.amax(1) if self.residual_pooling == "max" else sequence.mean(1)
        return masked_max(sequence, mask) if self.residual_pooling == "max" else masked_mean(sequence, mask)

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor, preview: torch.Tensor) -> torch.Tensor:
        """``sequence`` [B, T, d], ``mask`` [B, T], ``preview`` [B, query_dim] -> [B, d]."""
        scores = (self.query(preview).unsqueeze(1) @ self.key(sequence).transpose(1, 2)) * self.scale
        scores = scores + (1.0 - mask.to(scores.dtype)).unsqueeze(1) * -10000.0
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))
        attended = (weights @ self.value(sequence)).squeeze(1)
        out = self.norm(self.output(attended) + self._residual(sequence, mask))
        return self.ffn_norm(self.ffn_dropout(self.ffn_out(F.relu(self.ffn_in(out)))) + out)


def clip_steps(lengths: torch.Tensor, kernel: int, stride: int, upstream_padding: bool = False) -> torch.Tensor:
    """Valid steps of a kernel-``kernel``, stride-``stride`` convolution over videos of ``lengths`` frames:
    max(1, floor((len - k) / s) + 1); upstream: int((len - k) / s) + 1 with truncation toward zero (len 2 -> 1,
    len 1 -> 0 for k = 3, s = 2)."""
    if upstream_padding:
        return torch.trunc((lengths.double() - kernel) / stride).long() + 1
    return (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=1)


class PreviewIntensiveEncoder(nn.Module):
    """RIVRL's video encoder: frame features [B, T, D] with a mask -> (preview p, intensive r).

    Args:
        visual_dim: D (linked from the data); preview_size: biGRU size per direction (512);
        intensive_dim: width d of the frame path, the clip convolutions and PaA (2048; upstream hard-wires the conv
            kernel width to the 2048-d frame path); clip_kernel_sizes / clip_strides: the clip convolutions
            ((3,), (2,));
        key_dim: PaA d_k (512); preview_dropout: dropout of p (0.2); attention_dropout (0.2), ffn_dropout (0.1),
        residual_pooling (``max``): PaA's; gru_pool: preview pooling (``mean``); upstream_padding: see the module doc.

    As a ``visual_encoder`` of other methods (kind ``rivrl``) it returns ``EncodedVisual`` with the video vector
    [p; r] (``out_dim`` = 2 preview_size + d (1 + #convs)) as the pooled vector and as the one token of the video.
    """

    def __init__(
        self,
        visual_dim: int,
        preview_size: int = 512,
        intensive_dim: int = 2048,
        clip_kernel_sizes: tuple[int, ...] = (3,),
        clip_strides: tuple[int, ...] = (2,),
        key_dim: int = 512,
        preview_dropout: float = 0.2,
        attention_dropout: float = 0.2,
        ffn_dropout: float = 0.1,
        residual_pooling: str = "max",
        gru_pool: str = "mean",
        upstream_padding: bool = False,
    ):
        super().__init__()
        if len(clip_kernel_sizes) != len(clip_strides):
            raise ValueError(f"clip_kernel_sizes {clip_kernel_sizes} and clip_strides {clip_strides} differ in length")
        if gru_pool not in GRU_POOLS:
            raise ValueError(f"gru_pool: expected one of {GRU_POOLS}, got {gru_pool!r}")
        self.preview_rnn = nn.GRU(visual_dim, preview_size, batch_first=True, bidirectional=True)
        self.preview_dropout = nn.Dropout(preview_dropout)
        self.frame_fc = nn.Linear(visual_dim, intensive_dim)
        self.clip_kernels, self.clip_strides = tuple(clip_kernel_sizes), tuple(clip_strides)
        self.clip_convs = nn.ModuleList(
            nn.Conv1d(intensive_dim, intensive_dim, k, stride=s)
            for k, s in zip(self.clip_kernels, self.clip_strides, strict=True)
        )
        self.paa = PreviewAwareAttention(
            2 * preview_size,
            intensive_dim,
            key_dim,
            attention_dropout,
            ffn_dropout,
            residual_pooling,
            upstream_padding=upstream_padding,
        )
        self.gru_pool, self.upstream_padding = gru_pool, upstream_padding
        self.preview_dim = 2 * preview_size
        self.intensive_dim = intensive_dim * (1 + len(self.clip_convs))
        self.out_dim = self.preview_dim + self.intensive_dim

    def encode(self, visual: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(preview p [B, 2 preview_size], intensive r [B, d (1 + #convs)], frame path F [B, T, d])."""
        mask = mask.bool()
        lengths = mask.sum(1)
        states = gru_states(self.preview_rnn, visual, lengths, packed=not self.upstream_padding)
        preview = self.preview_dropout(pool_states(states, mask, self.gru_pool, self.upstream_padding))
        frames = F.relu(self.frame_fc(visual)) * mask.unsqueeze(-1).to(visual.dtype)
        levels = [self.paa(frames, mask, preview)]
        for conv, kernel, stride in zip(self.clip_convs, self.clip_kernels, self.clip_strides, strict=True):
            padded = F.pad(frames, (0, 0, 0, max(kernel - frames.shape[1], 0)))
            clips = F.relu(conv(padded.transpose(1, 2))).transpose(1, 2)
            steps = clip_steps(lengths, kernel, stride, self.upstream_padding)
            clip_mask = torch.arange(clips.shape[1], device=clips.device)[None, :] < steps[:, None]
            if not self.upstream_padding:
                clips = clips * clip_mask.unsqueeze(-1).to(clips.dtype)
            levels.append(self.paa(clips, clip_mask, preview))
        return preview, torch.cat(levels, 1), frames

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        preview, intensive, _ = self.encode(visual, mask)
        pooled = torch.cat([preview, intensive], 1)
        return EncodedVisual(pooled.unsqueeze(1), torch.ones_like(mask[:, :1], dtype=torch.bool), pooled)
