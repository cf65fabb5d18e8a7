"""Parity with AAA-Zheng/RVSEPP: our own reference of the official SelHN loss, image encoder, augmentations and COCO
evaluation, written from the official code, against ours (losses and gradients in float64 to 1e-6)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from leccr_lightning.data.precomp import RegionCaptionAugmentation
from leccr_lightning.methods.objectives import SelHNObjective
from leccr_lightning.metrics.protocols import coco_report
from leccr_lightning.metrics.ranking import retrieval_report
from leccr_lightning.modules.gpo import RegionEncoder
from tests.helpers import pair_context
from tests.parity.test_vse_infty import official_gpo, official_l2norm, official_mlp


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def official_selhn(v: torch.Tensor, t: torch.Tensor, margin: float = 0.2, epsilon: float = 0.01) -> torch.Tensor:
    """RVSEPP loss.py:15-60 (rows of the scores = images)."""
    batch_size = v.size(0)
    pos_mask = torch.eye(batch_size)
    neg_mask = 1 - pos_mask
    scores = v.mm(t.t())
    pos_scores = scores.diag().view(batch_size, 1)
    loss_t = ((scores - pos_scores.expand_as(scores) + margin).clamp(min=0)) * neg_mask
    loss_v = ((scores - pos_scores.t().expand_as(scores) + margin).clamp(min=0)) * neg_mask
    avg_loss_t, avg_loss_v = loss_t.sum(1) / (batch_size - 1), loss_v.sum(0) / (batch_size - 1)
    max_loss_t, max_loss_v = loss_t.max(1)[0], loss_v.max(0)[0]
    detached = scores.detach()
    neg_scores = detached * neg_mask - pos_mask
    diff_t = torch.abs(detached.diag() - neg_scores.max(1)[0])
    diff_v = torch.abs(detached.diag() - neg_scores.max(0)[0])
    loss_t = torch.where(diff_t < epsilon, avg_loss_t, max_loss_t).mean()
    loss_v = torch.where(diff_v < epsilon, avg_loss_v, max_loss_v).mean()
    return (loss_t + loss_v) / 2


def _embeddings(n: int, seed: int, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    t = torch.nn.functional.normalize(v + 0.7 * torch.randn(n, dim, generator=generator), dim=1)
    return v.requires_grad_(True), t.requires_grad_(True)


@pytest.mark.parametrize(("seed", "epsilon"), [(0, 0.01), (1, 0.01), (2, 0.3), (3, 0.0)])
def test_selhn_equals_the_official_loss_and_gradients(seed, epsilon):
    v, t = _embeddings(12, seed)
    reference = official_selhn(v, t, epsilon=epsilon)
    ours = SelHNObjective(selective_eps=epsilon)(pair_context(t @ v.T, torch.eye(12, dtype=torch.bool)))
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    grads_reference = torch.autograd.grad(reference, (v, t))
    grads_ours = torch.autograd.grad(ours, (v, t))
    for a, b in zip(grads_ours, grads_reference, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_selhn_switches_per_anchor_in_this_case():
    """The random cases above mix both branches: guard that they do (else the parity would miss one)."""
    v, t = _embeddings(12, 2)
    scores = (v @ t.T).detach()
    hardest = scores.masked_fill(torch.eye(12, dtype=torch.bool), -1).max(1).values
    gaps = (scores.diag() - hardest).abs()
    assert bool((gaps < 0.3).any()) and bool((gaps >= 0.3).any())


def test_image_encoder_equals_the_official_rvsepp_image_encoder():
    """RVSEPP encoders.py:23-50: fc (Xavier, zero bias) -> MLP(fc) + fc -> GPO -> l2norm, over padded region sets."""
    torch.manual_seed(0)
    ours = RegionEncoder(10, 8, mlp="residual", pooling="gpo")
    lengths = torch.tensor([6, 4, 2])
    features = torch.randn(3, 6, 10) * (torch.arange(6)[None, :, None] < lengths[:, None, None])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    hidden = ours.fc(features)
    hidden = official_mlp([ours.mlp.fc1, ours.mlp.fc2], ours.mlp.norm, hidden) + hidden
    reference = official_l2norm(official_gpo(ours.gpo.gru, ours.gpo.score, hidden, lengths))
    assert torch.allclose(ours(features, mask), reference, atol=1e-7)


def official_process_caption(tokens: list[int], vocab_size: int, mask_id: int, rng: random.Random) -> list[int]:
    """RVSEPP image_caption.py:74-98 on token ids (``<start>`` and ``<end>`` included)."""
    out, deleted = list(tokens), []
    for i in range(len(tokens)):
        prob = rng.random()
        if prob < 0.20:
            prob /= 0.20
            if prob < 0.5:
                out[i] = mask_id
            elif prob < 0.6:
                out[i] = rng.randrange(vocab_size)
            else:
                deleted.append(i)
    return [out[i] for i in range(len(out)) if i not in deleted]


def _outcome_rates(captions: list[list[int]], perturbed: list[list[int]], mask_id: int) -> np.ndarray:
    """Shares of the tokens kept unchanged / masked / other / deleted (a token replaced by an id equal to itself
    counts as unchanged)."""
    total = sum(len(c) for c in captions)
    kept = sum(len(p) for p in perturbed)
    masked = sum(sum(1 for x in p if x == mask_id) for p in perturbed)
    unchanged = sum(sum(1 for x in p if 10 <= x < 30) for p in perturbed)
    return np.array([unchanged, masked, kept - masked - unchanged, total - kept]) / total


def test_caption_perturbation_has_the_official_distribution():
    vocab_size, mask_id = 40, 39
    captions = [list(range(10 + i % 5, 30 - i % 7)) for i in range(1500)]
    rng = random.Random(0)
    official = [official_process_caption(c, vocab_size, mask_id, rng) for c in captions]
    augmentation = RegionCaptionAugmentation(seed=0)
    lengths = torch.tensor([len(c) for c in captions])
    ids = torch.zeros(len(captions), int(lengths.max()), dtype=torch.long)
    for row, caption in enumerate(captions):
        ids[row, : len(caption)] = torch.tensor(caption)
    batch = {
        "visual": torch.zeros(len(captions), 1, 1),
        "visual_mask": torch.ones(len(captions), 1, dtype=torch.bool),
        "text": {
            "source": {"input_ids": ids, "attention_mask": (torch.arange(ids.shape[1]) < lengths[:, None]).long()}
        },
        "caption_ids": [f"{i}#enc#0" for i in range(len(captions))],
    }
    out = augmentation(batch, epoch=0, mask_id=mask_id, vocab_size=vocab_size, pad_id=0)["text"]["source"]
    ours = [out["input_ids"][row, : int(out["attention_mask"][row].sum())].tolist() for row in range(len(captions))]
    expected = np.array([0.8 + 0.02 * 20 / 40, 0.1 + 0.02 / 40, 0.02 * 19 / 40, 0.08])
    for rates in (_outcome_rates(captions, official, mask_id), _outcome_rates(captions, ours, mask_id)):
        assert np.allclose(rates, expected, atol=0.006), rates  # 22,500 tokens: 4 standard errors
    again = augmentation(batch, epoch=0, mask_id=mask_id, vocab_size=vocab_size, pad_id=0)["text"]["source"]
    assert torch.equal(again["input_ids"], out["input_ids"])


def test_region_drop_has_the_official_keep_rate():
    """image_caption.py:53-56: a region is kept when np.random.rand() > 0.2."""
    np_rng = np.random.default_rng(0)
    official = np.mean([np.sum(np_rng.random(36) > 0.20) for _ in range(2000)])
    augmentation = RegionCaptionAugmentation(seed=1)
    batch = {
        "visual": torch.randn(2000, 36, 2),
        "visual_mask": torch.ones(2000, 36, dtype=torch.bool),
        "text": {},
        "caption_ids": [f"{i}#enc#0" for i in range(2000)],
    }
    kept = augmentation(batch, epoch=3, mask_id=0, vocab_size=5, pad_id=0)["visual_mask"].sum(1).double().mean()
    assert official == pytest.approx(28.8, abs=0.15) and float(kept) == pytest.approx(28.8, abs=0.15)


def official_i2t(npts: int, sims: np.ndarray) -> tuple[float, ...]:
    """RVSEPP evaluation.py:297-332 (mode 'coco'): sims [N images, 5N captions]."""
    ranks = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index])[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    return _official_summary(ranks)


def official_t2i(npts: int, sims: np.ndarray) -> tuple[float, ...]:
    """RVSEPP evaluation.py:335-375 (mode 'coco')."""
    ranks = np.zeros(5 * npts)
    sims = sims.T
    for index in range(npts):
        for i in range(5):
            inds = np.argsort(sims[5 * index + i])[::-1]
            ranks[5 * index + i] = np.where(inds == index)[0][0]
    return _official_summary(ranks)


def _official_summary(ranks: np.ndarray) -> tuple[float, ...]:
    r1, r5, r10 = (100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10))
    return r1, r5, r10, np.floor(np.median(ranks)) + 1, ranks.mean() + 1


def test_coco_protocol_equals_the_official_5_fold_1k_and_5k_evaluation():
    """evaluation.py:256-289 (5 folds of images f*n ... and their captions, metrics averaged) and :230-254 (full)."""
    rng = np.random.default_rng(1)
    images = 40
    sims = rng.normal(size=(images, 5 * images)) + np.kron(np.eye(images), np.ones((1, 5)))
    scores = torch.from_numpy(sims.T.copy())
    report = coco_report(scores, torch.arange(images).repeat_interleave(5), ks=(1, 5, 10), n_folds=5)
    n = images // 5
    folds = [
        (
            *official_i2t(n, sims[f * n : (f + 1) * n, f * 5 * n : (f + 1) * 5 * n]),
            *official_t2i(n, sims[f * n : (f + 1) * n, f * 5 * n : (f + 1) * 5 * n]),
        )
        for f in range(5)
    ]
    names = [f"{d}_{m}" for d in ("v2t", "t2v") for m in ("r1", "r5", "r10", "medr", "meanr")]
    for key, value in zip(names, np.mean(folds, axis=0), strict=True):
        assert report[f"coco1k/{key}"] == pytest.approx(value), key
    for key, value in zip(names, (*official_i2t(images, sims), *official_t2i(images, sims)), strict=True):
        assert report[f"coco5k/{key}"] == pytest.approx(value), key
    unfloored = retrieval_report(scores, torch.arange(images).repeat_interleave(5))
    assert unfloored["v2t_medr"] != report["coco5k/v2t_medr"], "the case must have a half-integer median rank"
