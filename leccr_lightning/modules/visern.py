"""ViSERN's video encoder (Feng et al., IJCAI 2020; itr_video_methods §2): frame regions -> random-walk GCN reasoning
-> frame features -> multi-level frame encoding.

    r'   = W_fc r                                (region projection, optionally L2-normalised as in VSRN)
    r*   = GCN^L(r' | P = random walk over the fully connected region graph of each frame)
    f_t  = mean_{present regions} r*           (frame feature)
    v    = [mean_t f_t, biGRU(f), biGRU-CNN(f)]  (Dual Encoding multi-level encoding of the frame sequence)

Inputs are regions [B, F, R, D] with a presence mask [B, F, R], or, as a registered visual encoder of the CCR methods
(``visual_encoder: visern``, data ``features: {kind: regions}``), the flattened [B, F * R, D] with ``regions_per_frame``
= R. Frames up to the last one with a present region are valid (a frame without regions has a zero feature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.modules.graph_reasoning import RegionReasoning
from leccr_lightning.modules.multilevel import MultiLevelVideoEncoder
from leccr_lightning.modules.visual_encoders import EncodedVisual


class ViSERNVideoEncoder(nn.Module):
    """Regions -> reasoned frame features (``tokens`` [B, F, width], ``mask`` [B, F]) and the multi-level video
    vector (``pooled`` [B, out_dim]).

    Args:
        in_dim: region feature width D (2048 for BUTD Faster R-CNN regions [recall]).
        width: joint region width after the FC (VSRN: the embedding size 2048) [recall].
        gcn_layers: reasoning depth (VSRN: 4) [recall]. normalizer: adjacency normaliser [recon: ``random_walk``];
            self_loop, output_norm: see ``RegionGCNLayer``.
        normalize_regions: L2-normalise the projected regions before reasoning (VSRN does) [recall].
        gru_hidden, kernel_sizes, filters: Dual Encoding's video-side sizes (1024; 2, 3, 4, 5; 512) [recall].
        regions_per_frame: R of flattened [B, F * R, D] inputs (``None``: inputs are [B, F, R, D]).
    """

    def __init__(
        self,
        in_dim: int,
        width: int = 2048,
        gcn_layers: int = 4,
        normalizer: str = "random_walk",
        self_loop: float = 1.0,
        output_norm: str = "batch",
        normalize_regions: bool = True,
        gru_hidden: int = 1024,
        kernel_sizes: tuple[int, ...] = (2, 3, 4, 5),
        filters: int = 512,
        regions_per_frame: int | None = None,
    ):
        super().__init__()
        self.fc = nn.Linear(in_dim, width)
        self.normalize_regions = normalize_regions
        self.reasoning = RegionReasoning(width, gcn_layers, None, normalizer, self_loop, output_norm)
        self.frames = MultiLevelVideoEncoder(width, gru_hidden, tuple(kernel_sizes), filters)
        self.regions_per_frame = regions_per_frame
        self.out_dim = self.frames.out_dim
        self.token_dim = width

    def _as_frames(self, regions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if regions.ndim == 4 and mask.ndim == 3:
            return regions, mask.bool()
        if regions.ndim == 3 and mask.ndim == 2 and self.regions_per_frame:
            batch, length, dim = regions.shape
            if length % self.regions_per_frame:
                raise ValueError(
                    f"ViSERN encoder: {length} flattened regions is not a multiple of regions_per_frame="
                    f"{self.regions_per_frame}"
                )
            frames = length // self.regions_per_frame
            shape = (batch, frames, self.regions_per_frame)
            return regions.reshape(*shape, dim), mask.bool().reshape(shape)
        raise ValueError(
            f"ViSERN encoder expects regions [B, F, R, D] with a mask [B, F, R], or [B, F * R, D] with "
            f"regions_per_frame set; got {tuple(regions.shape)} and a mask of {tuple(mask.shape)}"
        )

    def reason(self, regions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reasoned region features [B, F, R, width] and the presence mask [B, F, R]."""
        regions, mask = self._as_frames(regions, mask)
        projected = self.fc(regions)
        if self.normalize_regions:
            projected = F.normalize(projected, dim=-1)
        return self.reasoning(projected * mask[..., None], mask), mask

    def forward(self, regions: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        reasoned, mask = self.reason(regions, mask)
        counts = mask.sum(-1, keepdim=True)
        frames = reasoned.sum(2) / counts.clamp_min(1).to(reasoned.dtype)
        has_region = counts[..., 0] > 0
        frame_mask = has_region.flip(-1).cummax(-1).values.flip(-1)
        return EncodedVisual(frames, frame_mask, self.frames(frames, frame_mask))
