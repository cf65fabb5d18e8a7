"""Parity with AAA-Zheng/Listwise_ITR: our own reference of the official RSC relevance and TripletSNDCGLoss, written
from the official code, against ``CaptionEmbeddingRelevance(mapping="shifted")`` and ``ListwiseObjective`` (loss and
gradients in float64 to 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leccr_lightning.methods.objectives import ListwiseObjective
from leccr_lightning.metrics.relevance import BatchTexts, CaptionEmbeddingRelevance, InBatchRelevance
from tests.helpers import pair_context


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class GivenRelevance(InBatchRelevance):
    """The provider interface around a given r [texts, visuals] (the official matrix transposed)."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def similarity(self, texts: BatchTexts) -> torch.Tensor:
        return self.matrix


def l2norm_3d(x: torch.Tensor) -> torch.Tensor:
    """Listwise_ITR model.py:104-109."""
    return x / x.pow(2).sum(dim=2, keepdim=True).sqrt()


def official_rsc(v_text_emb: torch.Tensor, t_text_emb: torch.Tensor) -> torch.Tensor:
    """model.py:151-166: relevance[image i, text j] = (1 + max_k cos(e_ik, e_j)) / 2, diagonal 1; v_text_emb [B, 5, d]
    are the five captions of each image (data.py:57-59), t_text_emb [B, d] the batch captions (data.py:54-55)."""
    batch = t_text_emb.size(0)
    pos_mask = torch.eye(batch)
    v = l2norm_3d(v_text_emb.transpose(0, 1))
    t = l2norm_3d(t_text_emb.view(1, batch, -1).expand(5, batch, t_text_emb.size(1)))
    relevance = torch.bmm(v, t.transpose(1, 2)).max(0)[0]
    return ((1 + relevance) / 2) * (1 - pos_mask) + pos_mask


def official_sigmoid(tensor: torch.Tensor, tau: float) -> torch.Tensor:
    """model.py:112-120."""
    return 1.0 / (1.0 + torch.exp(torch.clamp(-tensor / tau, min=-50, max=50)))


def official_sndcg_loss(matrix: torch.Tensor, relevance: torch.Tensor, tau: float = 0.01) -> torch.Tensor:
    """One direction of model.py:180-253: mean over the rows of 1 - DCG / IDCG, smooth ranks 1 + sum_{k != j}
    sigmoid((s_k - s_j) / tau), IDCG ranks 1 + #{k : r_k > r_j} (ties share the better rank)."""
    batch = matrix.size(0)
    neg_mask = 1 - torch.eye(batch)
    repeat = relevance.unsqueeze(dim=2).repeat(1, 1, batch)
    relevance_rk = torch.where(repeat.permute(0, 2, 1) - repeat > 0, 1.0, 0.0).sum(dim=-1) + 1
    idcg = ((2**relevance - 1) / torch.log2(1 + relevance_rk)).sum(dim=-1)
    rep = matrix.unsqueeze(dim=2).repeat(1, 1, batch)
    ranks = (official_sigmoid(rep.permute(0, 2, 1) - rep, tau) * neg_mask).sum(dim=-1) + 1
    dcg = ((2**relevance - 1) / torch.log2(1 + ranks)).sum(dim=-1)
    return (1 - dcg / idcg).mean()


def official_listwise(v, t, relevance, margin=0.2, sndcg_weight=0.5, t2i_relevance=None) -> torch.Tensor:
    """model.py:134-255 given relevance [images, texts]: (1 - w) Triplet-HN + w (i2t + t2i S-NDCG losses) / 2, the
    t2i side reading the same matrix (``t2i_relevance`` replaces it for the corrected form)."""
    batch = v.size(0)
    neg_mask = 1 - torch.eye(batch)
    scores = v.mm(t.t())
    pos = scores.diag().view(batch, 1)
    loss_t = (((scores - pos.expand_as(scores) + margin).clamp(min=0)) * neg_mask).max(dim=1)[0].mean()
    loss_v = (((scores - pos.t().expand_as(scores) + margin).clamp(min=0)) * neg_mask).max(dim=0)[0].mean()
    t2i = relevance if t2i_relevance is None else t2i_relevance
    listwise = (official_sndcg_loss(scores, relevance) + official_sndcg_loss(scores.t(), t2i)) / 2
    return (1 - sndcg_weight) * (loss_t + loss_v) / 2 + sndcg_weight * listwise


def _case(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(n, 8, generator=generator), dim=1)
    t = torch.nn.functional.normalize(v + 0.8 * torch.randn(n, 8, generator=generator), dim=1)
    captions = torch.randn(n, 5, 6, generator=generator)
    return v.requires_grad_(True), t.requires_grad_(True), captions


@pytest.mark.parametrize(
    ("seed", "weight", "legacy"), [(0, 0.5, True), (1, 0.3, True), (2, 1.0, True), (3, 0.5, False)]
)
def test_listwise_objective_equals_the_official_triplet_sndcg_loss_and_gradients(seed, weight, legacy):
    v, t, captions = _case(10, seed)
    # the batch captions: caption 0 of each image, so the relevance has no ties off the diagonal
    official_relevance = official_rsc(captions, captions[:, 0]).float().double()
    objective = ListwiseObjective(
        sndcg_weight=weight, relevance=GivenRelevance(official_relevance.T), legacy_untransposed=legacy
    )
    context = pair_context(t @ v.T, torch.eye(10, dtype=torch.bool), batch={"caption_ids": [""] * 10})
    ours = objective(context)
    corrected = None if legacy else official_relevance.T  # the text->image side reads text-by-image relevance
    reference = official_listwise(v, t, official_relevance, sndcg_weight=weight, t2i_relevance=corrected)
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (v, t)), torch.autograd.grad(reference, (v, t)), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_caption_embedding_relevance_equals_the_official_rsc(tmp_path):
    """Over all five reference captions of each image, whether or not they are in the batch."""
    generator = torch.Generator().manual_seed(5)
    images, per_image = 6, 5
    embeddings = torch.randn(images * per_image, 7, generator=generator).float()
    ids = [f"{i}#enc#{k}" for i in range(images) for k in range(per_image)]
    np.save(tmp_path / "train_caps_emb.npy", embeddings.numpy())

    class Data:
        folder = tmp_path
        train_caption_ids = tuple(ids)

    provider = CaptionEmbeddingRelevance("train_caps_emb.npy", mapping="shifted")
    provider.bind_data(Data())
    rows = [3, 7, 14, 20, 29, 1]  # one caption of images 0, 1, 2, 4, 5 and a second one of image 0
    index = torch.tensor([r // per_image for r in rows])
    texts = BatchTexts(index=index, caption_ids=[ids[r] for r in rows])
    ours = provider(torch.eye(len(rows), dtype=torch.bool), texts)
    stacked = embeddings.double().view(images, per_image, -1)
    official = official_rsc(stacked[index], embeddings.double()[rows])
    assert torch.allclose(ours.double(), official.T, atol=1e-6)
