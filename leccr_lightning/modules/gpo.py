"""VSE building blocks (itr spec §4.3, §5.5): GPO pooling, the two-layer region MLP and the region encoder.

Written from woodfrog/vse_infty ``lib/modules/aggr/gpo.py`` and ``lib/modules/mlp.py`` (which RVSE++ imports as
``lib.gpo`` / ``lib.mlp``, AAA-Zheng/RVSEPP ``encoders.py:7-8``), the region encoder of RVSE++ (``encoders.py:23-50``)
and that of the VSE++ baseline of the released BCLS / Listwise / unified-loss code (ITM_CLS ``model.py:16-38``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

IMAGE_MLPS = ("residual", "parallel", "none")
POOLINGS = ("gpo", "max")


def sine_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Sinusoidal position codes [length, dim] in float32: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)
    (vse_infty ``gpo.py:8-24``)."""
    if dim % 2:
        raise ValueError(f"sine position codes need an even dimension, got {dim}")
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency)
    return codes


class GPO(nn.Module):
    """Generalized Pooling Operator (VSE-infinity): pooled_d = sum_k w_k * sort_desc(x_{., d})_k over the valid entries.

    Each feature dimension is sorted in descending order over the set; the weights over the sorted positions
    1..n (n = the item's own set size) come from sine position codes (``pe_dim`` 32) -> BiGRU (``hidden`` 32) run
    over exactly n steps (a packed sequence, vse_infty ``gpo.py:46-50``), directions averaged -> Linear(hidden, 1,
    no bias) -> softmax(logits / ``temperature``) with ``temperature`` 0.1 and padded positions at
    ``padding_value`` -10000 (``gpo.py:51-54``). So an item's embedding depends on its own entries only, never on
    its batch-mates' set sizes.
    """

    def __init__(self, pe_dim: int = 32, hidden: int = 32, temperature: float = 0.1, padding_value: float = -10000.0):
        super().__init__()
        self.pe_dim, self.temperature, self.padding_value = pe_dim, temperature, padding_value
        self.gru = nn.GRU(pe_dim, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(hidden, 1, bias=False)

    def weights(self, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """Pooling weights [B, width] over the sorted positions of sets of ``lengths`` [B] (0 beyond each length)."""
        batch = lengths.shape[0]
        valid = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
        dtype = self.score.weight.dtype
        codes = sine_positions(width, self.pe_dim, lengths.device).to(dtype).expand(batch, width, self.pe_dim)
        packed = pack_padded_sequence(codes, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=width)
        half = states.shape[-1] // 2
        states = (states[..., :half] + states[..., half:]) / 2
        logits = self.score(states).squeeze(-1).masked_fill(~valid, self.padding_value)
        return torch.softmax(logits / self.temperature, dim=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool a set [B, K, D] with validity ``mask`` [B, K] (valid entries first or anywhere) into [B, D]."""
        mask = mask.bool()
        lengths = mask.sum(1)
        ordered = features.masked_fill(~mask[..., None], self.padding_value).sort(dim=1, descending=True).values
        valid_sorted = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        ordered = ordered.masked_fill(~valid_sorted[..., None], 0.0)
        return (self.weights(lengths, mask.shape[1])[..., None] * ordered).sum(1)


class TwoLayerMLP(nn.Module):
    """MLP(x) = Linear(hidden, out)(ReLU(BatchNorm(Linear(in, hidden)(x)))) over the last dimension, BatchNorm over
    every row of the batch (padded rows included, as vse_infty ``mlp.py:29-46`` with ``num_layers`` 2)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return self.fc2(torch.relu(self.norm(self.fc1(flat)))).view(*x.shape[:-1], -1)


class RegionEncoder(nn.Module):
    """Region features [B, K, D] -> Linear(D, d) (Xavier-uniform, zero bias) -> region MLP -> pooling -> L2 norm.

    ``mlp``: ``"residual"`` h = fc(x) + MLP(fc(x)), MLP = d -> d/2 -> d (RVSE++ ``encoders.py:45-46``);
    ``"parallel"`` h = fc(x) + MLP(x), MLP = D -> d/2 -> d (VSE-infinity ``encoders.py:85,99-102``); ``"none"``
    h = fc(x) (VSE++). ``pooling``: ``"gpo"`` (GPO(``gpo_dim``, ``gpo_dim``)) or ``"max"`` (max over the valid
    regions, VSE++ ``max_pool1d``, ITM_CLS ``model.py:33-36``).
    """

    def __init__(self, in_dim: int, embed_dim: int, mlp: str = "residual", pooling: str = "gpo", gpo_dim: int = 32):
        super().__init__()
        if mlp not in IMAGE_MLPS:
            raise ValueError(f"mlp: expected one of {IMAGE_MLPS}, got {mlp!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
        self.mlp_mode, self.pooling = mlp, pooling
        self.fc = nn.Linear(in_dim, embed_dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if mlp != "none":
            self.mlp = TwoLayerMLP(embed_dim if mlp == "residual" else in_dim, embed_dim // 2, embed_dim)
        if pooling == "gpo":
            self.gpo = GPO(gpo_dim, gpo_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [B, d] of region sets [B, K, D] with validity ``mask`` [B, K]."""
        mask = mask.bool()
        hidden = self.fc(features)
        if self.mlp_mode == "residual":
            hidden = hidden + self.mlp(hidden)
        elif self.mlp_mode == "parallel":
            hidden = hidden + self.mlp(features)
        if self.pooling == "gpo":
            pooled = self.gpo(hidden, mask)
        else:
            pooled = hidden.masked_fill(~mask[..., None], float("-inf")).max(dim=1).values
        return nn.functional.normalize(pooled, dim=-1)
