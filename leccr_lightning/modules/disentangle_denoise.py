"""CDNet's two front blocks (reconstruction, spec grounding_methods §4.2), without Lightning.

QSD (query-guided semantic disentanglement): per-clip alignment alpha_i = sigma(MLP[g_i, f_i]) from a global
correlation g_i = cos(P_v v_i, P_t t_bar) and a fine-grained one f_i = max_j (or LSE_j) cos(P_v v_i, P_w w_j).
CDD (context-aware dynamic denoising): M offsets Delta_im = max_offset * tanh(W_o [v_i; t_bar]) and weights
omega_im = softmax(W_w [v_i; t_bar]) re-sample the context stream by linear interpolation in time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.modules.detr import MLP
from leccr_lightning.modules.pooling import masked_mean


def sample_in_time(values: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of values [B, T, D] at fractional clip positions [B, T, M], clamped to each video's
    valid clips [0, length - 1]; returns [B, T, M, D]."""
    b, t, d = values.shape
    pos = torch.minimum(positions.clamp(min=0), (lengths - 1).clamp(min=0).view(b, 1, 1).to(positions))
    low = pos.floor().long().clamp(max=t - 1)
    high = (low + 1).clamp(max=t - 1)
    frac = (pos - low.to(pos)).unsqueeze(-1)

    def gather(idx: torch.Tensor) -> torch.Tensor:
        return values.gather(1, idx.reshape(b, -1, 1).expand(-1, -1, d)).view(*idx.shape, d)

    return gather(low) * (1 - frac) + gather(high) * frac


class QuerySemanticDisentangle(nn.Module):
    """QSD: per-clip alignment alpha [B, T] from global and fine-grained clip-query correlations."""

    def __init__(self, d: int, fine_pooling: str = "max", lse_temperature: float = 0.1) -> None:
        super().__init__()
        if fine_pooling not in ("max", "lse"):
            raise ValueError(f"fine_pooling must be 'max' or 'lse', got {fine_pooling!r}")
        self.video_proj, self.sentence_proj, self.word_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.gate = MLP(2, d // 4 or 1, 1, 2)
        self.fine_pooling, self.lse_temperature = fine_pooling, lse_temperature

    def correlations(
        self, video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All-pairs g [Bq, Bv, T] (sentence of query b vs clips of video b') and f [Bq, Bv, T] (words)."""
        v = F.normalize(self.video_proj(video), dim=-1)
        s = F.normalize(self.sentence_proj(masked_mean(text, text_mask)), dim=-1)
        w = F.normalize(self.word_proj(text), dim=-1)
        g = torch.einsum("qd,vtd->qvt", s, v)
        word_sim = torch.einsum("qld,vtd->qvtl", w, v).masked_fill(~text_mask[:, None, None, :], -1e4)
        if self.fine_pooling == "max":
            f = word_sim.max(-1).values
        else:
            f = self.lse_temperature * torch.logsumexp(word_sim / self.lse_temperature, dim=-1)
        return g, f

    def forward(
        self, video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """alpha [B, T] for each sample's own pair, and the all-pairs g, f for the contrastive losses."""
        g, f = self.correlations(video, text, text_mask)
        own = torch.arange(video.shape[0], device=video.device)
        alpha = self.gate(torch.stack([g[own, own], f[own, own]], dim=-1)).squeeze(-1).sigmoid()
        return alpha, g, f


class ContextDynamicDenoise(nn.Module):
    """CDD: M query-relevant temporal offsets per clip re-sample the context stream (1-D deformable sampling)."""

    def __init__(self, d: int, num_offsets: int = 4, max_offset: float = 4.0) -> None:
        super().__init__()
        self.offsets = nn.Linear(2 * d, num_offsets)
        self.weights = nn.Linear(2 * d, num_offsets)
        self.value = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.max_offset = max_offset
        nn.init.zeros_(self.offsets.weight)
        nn.init.uniform_(self.offsets.bias, -1.0, 1.0)

    def forward(
        self, relevant: torch.Tensor, context: torch.Tensor, sentence: torch.Tensor, video_mask: torch.Tensor
    ) -> torch.Tensor:
        """LayerNorm(relevant_i + sum_m omega_im * value(context)(i + Delta_im)) -> [B, T, d]."""
        cond = torch.cat([relevant + context, sentence[:, None].expand_as(relevant)], dim=-1)
        delta = self.max_offset * torch.tanh(self.offsets(cond))
        omega = self.weights(cond).softmax(-1)
        base = torch.arange(relevant.shape[1], device=relevant.device, dtype=relevant.dtype)
        sampled = sample_in_time(self.value(context), base[None, :, None] + delta, video_mask.sum(1))
        return self.norm(relevant + (omega.unsqueeze(-1) * sampled).sum(2))
