"""Parity with AAA-Zheng/ITM_CLS (the released BCLS code): our own reference of the official VSE++ encoders, the
raw inner-product labels and RCLoss, written from the official code, against ours (float64, 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from leccr_lightning.methods.objectives import BCLSObjective
from leccr_lightning.metrics.relevance import BatchTexts, CaptionEmbeddingRelevance
from leccr_lightning.modules.gpo import RegionEncoder
from leccr_lightning.modules.gru_text import GRUTextEncoder
from tests.helpers import pair_context
from tests.parity.test_listwise_itr import GivenRelevance


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def official_labels(v_text_emb: torch.Tensor, t_text_emb: torch.Tensor) -> torch.Tensor:
    """model.py:124-134 (label 'text'): relevance[image i, text j] = max_k <e_ik, e_j> (raw), diagonal 1."""
    batch = t_text_emb.size(0)
    pos_mask = torch.eye(batch)
    v = v_text_emb.transpose(0, 1)
    t = t_text_emb.view(1, batch, -1).expand(5, batch, t_text_emb.size(1))
    relevance = torch.bmm(v, t.transpose(1, 2)).max(0)[0]
    return relevance * (1 - pos_mask) + pos_mask


def official_rcloss(v, t, relevance, margin=0.2, gap=0.3, t2i_relevance=None) -> torch.Tensor:
    """model.py:92-163 given relevance [images, texts]: Triplet-HN + Kendall hinge over the pairs r_bi - r_bj > gap,
    summed over both directions and divided by the number of pairs (one count, from the one matrix)."""
    batch = v.size(0)
    neg_mask = 1 - torch.eye(batch)
    scores = v.mm(t.t())
    pos = scores.diag().view(batch, 1)
    loss_t = (((scores - pos.expand_as(scores) + margin).clamp(min=0)) * neg_mask).max(dim=1)[0].mean()
    loss_v = (((scores - pos.t().expand_as(scores) + margin).clamp(min=0)) * neg_mask).max(dim=0)[0].mean()
    triplet = (loss_t + loss_v) / 2

    def pairs(matrix: torch.Tensor) -> torch.Tensor:
        repeat = matrix.unsqueeze(dim=2).repeat(1, 1, batch)
        diff = (repeat.permute(0, 2, 1) - repeat).clamp(max=0)
        return torch.where(diff + gap < 0, 1.0, 0.0)

    def hinge(matrix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        repeat = matrix.unsqueeze(dim=2).repeat(1, 1, batch)
        return ((repeat.permute(0, 2, 1) - repeat).clamp(min=0) * mask).sum() / mask.sum()

    mask_t = pairs(relevance)
    mask_v = mask_t if t2i_relevance is None else pairs(t2i_relevance)
    return triplet + (hinge(scores, mask_t) + hinge(scores.t(), mask_v)) / 2


@pytest.mark.parametrize(("seed", "legacy"), [(0, True), (1, True), (2, False)])
def test_bcls_objective_equals_the_official_rcloss_and_gradients(seed, legacy):
    generator = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(10, 8, generator=generator), dim=1).requires_grad_(True)
    t = torch.nn.functional.normalize(v.detach() + 0.8 * torch.randn(10, 8, generator=generator), dim=1)
    t.requires_grad_(True)
    captions = torch.nn.functional.normalize(torch.randn(10, 5, 6, generator=generator), dim=-1)
    relevance = official_labels(captions, captions[:, 0]).float().double()
    objective = BCLSObjective(relevance=GivenRelevance(relevance.T), legacy_untransposed=legacy)
    ours = objective(pair_context(t @ v.T, torch.eye(10, dtype=torch.bool), batch={"caption_ids": [""] * 10}))
    reference = official_rcloss(v, t, relevance, t2i_relevance=None if legacy else relevance.T)
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (v, t)), torch.autograd.grad(reference, (v, t)), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_caption_embedding_cos_labels_are_the_official_raw_inner_product(tmp_path):
    generator = torch.Generator().manual_seed(7)
    embeddings = 3.0 * torch.randn(20, 4, generator=generator)  # not unit norm: no normalisation applied
    embeddings[15:20] = -embeddings[2] + 0.1 * torch.randn(5, 4, generator=generator)  # image 3 opposes caption 2
    embeddings = embeddings.float()
    ids = [f"{i}#enc#{k}" for i in range(4) for k in range(5)]
    np.save(tmp_path / "emb.npy", embeddings.numpy())
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    provider = CaptionEmbeddingRelevance(str(tmp_path / "emb.npy"), str(tmp_path / "ids.txt"), mapping="cos")
    rows = [2, 9, 13, 16]
    index = torch.tensor([r // 5 for r in rows])
    ours = provider(torch.eye(4, dtype=torch.bool), BatchTexts(index=index, caption_ids=[ids[r] for r in rows]))
    official = official_labels(embeddings.double().view(4, 5, -1)[index], embeddings.double()[rows])
    assert torch.allclose(ours.double(), official.T, atol=1e-5 * float(official.abs().max()))
    assert float(official.min()) < 0 < 1 < float(official.max()), (
        "the raw inner product: neither clipped nor normalised"
    )


def test_vsepp_encoders_equal_the_official_encoder_image_and_encoder_text():
    """model.py:16-38 (fc, max_pool1d over the regions, normalize) and model.py:50-77 (GRU, the output at length - 1,
    normalize; the official collate sorts captions by length)."""
    torch.manual_seed(0)
    image = RegionEncoder(10, 8, mlp="none", pooling="max")
    regions = torch.randn(3, 36, 10)
    official_image = torch.nn.functional.normalize(
        torch.nn.functional.max_pool1d(image.fc(regions).permute(0, 2, 1), 36).squeeze(2), p=2, dim=1
    )
    assert torch.allclose(image(regions, torch.ones(3, 36, dtype=torch.bool)), official_image, atol=1e-12)
    text = GRUTextEncoder(vocab_size=25, embed_dim=8, word_dim=6)
    lengths = [6, 4, 4, 2]
    ids = torch.randint(1, 25, (4, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    ids = ids.masked_fill(~mask, 0)
    padded = pad_packed_sequence(
        text.gru(pack_padded_sequence(text.embedding(ids), lengths, batch_first=True))[0], True
    )
    index = torch.tensor(lengths).view(-1, 1, 1).expand(4, 1, 8) - 1
    official_text = torch.nn.functional.normalize(torch.gather(padded[0], 1, index).squeeze(1), p=2, dim=1)
    assert torch.allclose(text(ids, mask.long()), official_text, atol=1e-12)
    assert torch.allclose(text(ids[3:, :2], mask[3:, :2].long())[0], official_text[3], atol=1e-12)
