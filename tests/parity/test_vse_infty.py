"""Parity with woodfrog/vse_infty (branch ``bigru``, the GPO / MLP that RVSE++ imports): our own reference of each
official module, written from the official code, against ours with shared weights in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from leccr_lightning.modules.gpo import GPO, RegionEncoder
from leccr_lightning.modules.gru_text import BiGRUTextEncoder


@pytest.fixture(autouse=True)
def _float64():
    """Every tensor and module of these comparisons in float64 (restored afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def official_positions(d_model: int, length: int) -> torch.Tensor:
    """vse_infty lib/modules/aggr/gpo.py:8-24 (computed in float32)."""
    pe = torch.zeros(length, d_model, dtype=torch.float32)
    position = torch.arange(0, length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position.float() * div_term)
    pe[:, 1::2] = torch.cos(position.float() * div_term)
    return pe


def official_gpo(gru: nn.GRU, linear: nn.Linear, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """vse_infty gpo.py:37-71: packed BiGRU over the position codes, scores masked to -10000, softmax(/0.1), sorted
    features (padding -10000 before the sort, 0 after) weighted and summed."""
    max_len = int(lengths.max())
    pes = official_positions(gru.input_size, max_len).to(features.dtype).unsqueeze(0).repeat(lengths.size(0), 1, 1)
    mask = (torch.arange(max_len).expand(lengths.size(0), max_len) < lengths.long().unsqueeze(1)).unsqueeze(-1)
    pes = pes.masked_fill(mask == 0, 0)
    packed = pack_padded_sequence(pes, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out_emb, _ = pad_packed_sequence(gru(packed)[0], batch_first=True)
    out_emb = (out_emb[:, :, : out_emb.size(2) // 2] + out_emb[:, :, out_emb.size(2) // 2 :]) / 2
    scores = linear(out_emb)
    scores[torch.where(mask == 0)] = -10000
    weights = torch.softmax(scores / 0.1, 1)
    features = features[:, :max_len, :]
    ordered = features.masked_fill(mask == 0, -10000).sort(dim=1, descending=True)[0].masked_fill(mask == 0, 0)
    return (ordered * weights).sum(1)


def official_l2norm(x: torch.Tensor) -> torch.Tensor:
    """vse_infty encoders.py:25-30."""
    return x / (x.pow(2).sum(dim=-1, keepdim=True).sqrt() + 1e-8)


def official_mlp(layers: list[nn.Linear], norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """vse_infty lib/modules/mlp.py:40-46 with num_layers 2: ReLU(BN(fc1 x)) -> fc2, over B * N rows."""
    batch, n, dim = x.size()
    flat = torch.relu(norm(layers[0](x.reshape(batch * n, dim))))
    return layers[1](flat).view(batch, n, -1)


def _sets(seed: int, lengths: list[int], dim: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    features = torch.randn(len(lengths), width, dim, generator=generator)
    lengths_t = torch.tensor(lengths)
    mask = torch.arange(width)[None, :] < lengths_t[:, None]
    return features.masked_fill(~mask[..., None], 0.0), mask, lengths_t


def test_gpo_equals_the_official_packed_gpo_and_its_gradients():
    torch.manual_seed(0)
    ours = GPO(32, 32)
    features, mask, lengths = _sets(1, [5, 2, 7, 1])
    features.requires_grad_(True)
    pooled = ours(features, mask)
    reference = official_gpo(ours.gru, ours.score, features, lengths)
    assert torch.allclose(pooled, reference, atol=1e-10)
    (grad_ours,) = torch.autograd.grad(pooled.pow(2).sum(), features)
    (grad_reference,) = torch.autograd.grad(reference.pow(2).sum(), features)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-10)


def test_gpo_is_invariant_to_padding_and_to_the_batch_mates():
    torch.manual_seed(0)
    gpo = GPO(32, 32)
    features, mask, _ = _sets(2, [3, 8])
    wider = torch.cat([features, torch.full((2, 4, 6), 7.0)], 1)
    wider_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    assert torch.allclose(gpo(wider, wider_mask), gpo(features, mask), atol=1e-12)
    assert torch.allclose(gpo(features[:1, :3], mask[:1, :3])[0], gpo(features, mask)[0], atol=1e-12)


def test_bigru_text_encoder_equals_the_official_encoder_text():
    """vse_infty (bigru) encoders.py:166-206 / RVSEPP encoders.py:53-88: packed BiGRU, directions averaged, GPO over
    the caption lengths, l2norm. The official collate sorts captions by length (pack_padded_sequence requires it)."""
    torch.manual_seed(0)
    ours = BiGRUTextEncoder(vocab_size=30, embed_dim=8, word_dim=6)
    lengths = torch.tensor([7, 5, 5, 2])
    ids = torch.randint(1, 30, (4, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.arange(7)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    out_ours = ours(ids, mask.long())
    packed = pack_padded_sequence(ours.embedding(ids), lengths, batch_first=True)
    cap_emb, cap_len = pad_packed_sequence(ours.gru(packed)[0], batch_first=True)
    cap_emb = (cap_emb[:, :, : cap_emb.size(2) // 2] + cap_emb[:, :, cap_emb.size(2) // 2 :]) / 2
    reference = official_l2norm(official_gpo(ours.gpo.gru, ours.gpo.score, cap_emb, cap_len))
    assert torch.allclose(out_ours, reference, atol=1e-7)
    alone = ours(ids[3:, :2], mask[3:, :2].long())
    assert torch.allclose(alone[0], out_ours[3], atol=1e-12)


def test_parallel_region_encoder_equals_the_official_encoder_image_aggr():
    """vse_infty encoders.py:77-109 (precomp_enc_type 'basic'): fc(x) + MLP(x) with MLP(img_dim, d/2, d, 2), GPO,
    l2norm; Xavier-uniform fc with zero bias (encoders.py:89-95)."""
    torch.manual_seed(0)
    ours = RegionEncoder(10, 8, mlp="parallel", pooling="gpo")
    features, mask, lengths = _sets(4, [6, 6, 3], dim=10)
    reference = official_l2norm(
        official_gpo(
            ours.gpo.gru,
            ours.gpo.score,
            ours.fc(features) + official_mlp([ours.mlp.fc1, ours.mlp.fc2], ours.mlp.norm, features),
            lengths,
        )
    )
    assert torch.allclose(ours(features, mask), reference, atol=1e-7)
    bound = math.sqrt(6.0 / (10 + 8))
    assert float(ours.fc.weight.detach().abs().max()) <= bound and float(ours.fc.bias.detach().abs().max()) == 0.0
