"""Graph reasoning over the regions of a frame (VSRN's residual GCN; ViSERN's random-walk rule, itr_video_methods §2.2).

The regions r_1..r_N of a frame are the vertices of a fully connected graph with affinities A_ij = phi(r_i)^T psi(r_j)
(two learned linear maps). A normaliser turns A into the transition matrix P of a propagation step; one residual
layer is r <- r + Norm(W_r (P g(r))) (g, W_r linear). Normalisers (all give absent regions zero transition mass, in
their rows and their columns):

* ``none_div_n``: P = A / N (VSRN, KunpengLi1994/VSRN:GCN_lib/Rs_GCN.py, N = the number of present regions);
* ``row_softmax``: P = softmax_j(A_ij);
* ``random_walk``: P = D^-1 A+ with A+ = ReLU(A) + ``self_loop`` * I and D its degree (row sums): every row of a
  present region is a probability distribution (ViSERN's "random-walk rule" [recon]);
* ``sym``: P = D^-1/2 A+ D^-1/2 (the symmetric GCN normalisation of Kipf & Welling).

With ``output_norm="batch"`` Norm is a BatchNorm1d over the present regions whose scale and shift start at zero
(VSRN), so a stack starts as the identity; ``"none"`` starts W_r at zero instead.
"""

from __future__ import annotations

import torch
from torch import nn

NORMALIZERS = ("none_div_n", "row_softmax", "random_walk", "sym")
OUTPUT_NORMS = ("batch", "none")


def normalize_adjacency(affinity: torch.Tensor, mask: torch.Tensor, mode: str, self_loop: float = 1.0) -> torch.Tensor:
    """The transition matrix P [..., N, N] of affinities A [..., N, N] over regions with presence ``mask`` [..., N]."""
    if mode not in NORMALIZERS:
        raise ValueError(f"adjacency normaliser {mode!r}: expected one of {NORMALIZERS}")
    pair = mask[..., :, None] & mask[..., None, :]
    if mode == "none_div_n":
        count = mask.sum(-1, keepdim=True).clamp_min(1).to(affinity.dtype)
        return torch.where(pair, affinity, affinity.new_zeros(())) / count[..., None]
    if mode == "row_softmax":
        weights = torch.softmax(affinity.masked_fill(~pair, float("-inf")), dim=-1)
        return torch.where(pair, weights, weights.new_zeros(()))
    if self_loop < 0:
        raise ValueError(f"self_loop: expected a weight >= 0, got {self_loop}")
    eye = torch.eye(affinity.shape[-1], dtype=affinity.dtype, device=affinity.device)
    positive = torch.where(pair, affinity.relu() + self_loop * eye, affinity.new_zeros(()))
    degree = positive.sum(-1)
    if mode == "random_walk":
        return positive / degree.clamp_min(torch.finfo(degree.dtype).tiny)[..., None]
    inverse_root = degree.clamp_min(torch.finfo(degree.dtype).tiny).rsqrt() * mask
    return inverse_root[..., :, None] * positive * inverse_root[..., None, :]


class RegionGCNLayer(nn.Module):
    """One residual graph-reasoning step r <- r + Norm(W_r (P g(r))) over the regions of each frame.

    Args:
        dim: region width. inter_dim: width of phi, psi and g (VSRN: ``dim``).
        normalizer: the adjacency normaliser (module docstring) [recon: ``random_walk``].
        self_loop: weight of the self loops of ``random_walk``/``sym`` [recon: 1.0; it keeps every row stochastic
            when ReLU zeroes all affinities of a region].
        output_norm: ``batch`` (VSRN) or ``none``.
    """

    def __init__(
        self,
        dim: int,
        inter_dim: int | None = None,
        normalizer: str = "random_walk",
        self_loop: float = 1.0,
        output_norm: str = "batch",
    ):
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ValueError(f"adjacency normaliser {normalizer!r}: expected one of {NORMALIZERS}")
        if output_norm not in OUTPUT_NORMS:
            raise ValueError(f"output_norm {output_norm!r}: expected one of {OUTPUT_NORMS}")
        inter = inter_dim or dim
        self.normalizer, self.self_loop = normalizer, self_loop
        self.phi, self.psi, self.g = nn.Linear(dim, inter), nn.Linear(dim, inter), nn.Linear(dim, inter)
        self.out = nn.Linear(inter, dim)
        self.norm = nn.BatchNorm1d(dim) if output_norm == "batch" else None
        if self.norm is not None:
            nn.init.zeros_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
        else:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def transition(self, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P [..., N, N] from A_ij = phi(r_i)^T psi(r_j)."""
        affinity = self.phi(regions) @ self.psi(regions).transpose(-1, -2)
        return normalize_adjacency(affinity, mask, self.normalizer, self.self_loop)

    def forward(self, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reasoned regions [..., N, dim] (absent regions stay zero) of ``regions`` [..., N, dim], ``mask`` [..., N]."""
        update = self.out(self.transition(regions, mask) @ self.g(regions))
        if self.norm is not None:
            normed = torch.zeros_like(update)
            normed[mask] = self.norm(update[mask])
            update = normed
        return (regions + update) * mask[..., None]


class RegionReasoning(nn.Module):
    """``layers`` stacked ``RegionGCNLayer`` s (VSRN: 4) [recall: ViSERN's depth is not known, itr spec §11]."""

    def __init__(
        self,
        dim: int,
        layers: int = 4,
        inter_dim: int | None = None,
        normalizer: str = "random_walk",
        self_loop: float = 1.0,
        output_norm: str = "batch",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            RegionGCNLayer(dim, inter_dim, normalizer, self_loop, output_norm) for _ in range(layers)
        )

    def forward(self, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            regions = layer(regions, mask)
        return regions
