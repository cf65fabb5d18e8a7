"""RIVRL's modules: PaA, the previewing / intensive-reading video encoder, the multi-level text encoder, the hybrid
heads and the ``rivrl`` visual-encoder kind (itr_video_methods §1.8 invariants, §1.9 padding)."""

from __future__ import annotations

import math

import pytest
import torch

from leccr_lightning.modules.dual_encoding import MultiLevelTextEncoder
from leccr_lightning.modules.heads import HybridHead
from leccr_lightning.modules.rivrl import PreviewAwareAttention, PreviewIntensiveEncoder, clip_steps
from leccr_lightning.modules.visual_encoders import build_visual_encoder


def frames(lengths: list[int], dim: int, width: int | None = None, seed: int = 0):
    width = width or max(lengths)
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), width, dim, generator=generator) * mask.unsqueeze(-1), mask


def encoder(upstream: bool = False) -> PreviewIntensiveEncoder:
    torch.manual_seed(0)
    return PreviewIntensiveEncoder(12, preview_size=6, intensive_dim=16, key_dim=8, upstream_padding=upstream).eval()


@pytest.mark.parametrize("length", [1, 4, 9])
def test_paa_output_is_d_wide_whatever_the_length(length):
    paa = PreviewAwareAttention(6, 16, 8).eval()
    x, mask = frames([length, 1], 16)
    assert paa(x.relu(), mask, torch.randn(2, 6)).shape == (2, 16)


def test_paa_ignores_masked_padding():
    paa = PreviewAwareAttention(6, 16, 8).eval()
    x, mask = frames([3, 5], 16)
    padded, padded_mask = frames([3, 5], 16, width=9)
    padded[:, :5] = x
    preview = torch.randn(2, 6)
    torch.testing.assert_close(paa(x.relu(), mask, preview), paa(padded.relu(), padded_mask, preview))


def test_clip_steps_count_valid_windows_with_upstream_truncation_as_a_flag():
    lengths = torch.tensor([1, 2, 3, 4, 5, 7, 64])
    assert clip_steps(lengths, 3, 2).tolist() == [1, 1, 1, 1, 2, 3, 31]
    assert clip_steps(lengths, 3, 2, upstream_padding=True).tolist() == [0, 1, 1, 1, 2, 3, 31]
    # the conv output over a batch of length L has floor((L - 3) / 2) + 1 steps
    for width in (3, 4, 5, 10, 64):
        conv = torch.nn.Conv1d(1, 1, 3, stride=2)
        assert conv(torch.zeros(1, 1, width)).shape[-1] == math.floor((width - 3) / 2) + 1


def test_video_vectors_do_not_depend_on_the_batch_padding_by_default():
    model = encoder()
    videos, mask = frames([7, 4, 2, 1], 12)
    padded, padded_mask = frames([7, 4, 2, 1], 12, width=12)
    padded[:, :7] = videos
    preview, intensive, _ = model.encode(videos, mask)
    assert preview.shape == (4, 12) and intensive.shape == (4, 32)
    torch.testing.assert_close(torch.cat([preview, intensive], 1), torch.cat(model.encode(padded, padded_mask)[:2], 1))
    upstream = encoder(upstream=True)
    assert not torch.allclose(upstream.encode(videos, mask)[1], upstream.encode(padded, padded_mask)[1], atol=1e-5)


def test_a_batch_of_videos_shorter_than_the_kernel_is_encoded():
    videos, mask = frames([2, 1], 12)
    preview, intensive, tokens = encoder().encode(videos, mask)
    assert torch.isfinite(intensive).all() and tokens.shape == (2, 2, 16)


def test_text_vectors_do_not_depend_on_the_batch_padding_by_default():
    torch.manual_seed(1)
    text = MultiLevelTextEncoder(20, 16, word_dim=8, rnn_size=5, kernel_num=3, sentence_dim=4).eval()
    assert text.out_dim == 10 + 9 + 16 + 4
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    mask = (ids > 0).long()
    bow, sentence = torch.rand(2, 16), torch.rand(2, 4)
    together = text(ids, mask, bow, sentence)
    alone = text(ids[1:, :3], mask[1:, :3], bow[1:], sentence[1:])
    torch.testing.assert_close(together[1:], alone)
    with pytest.raises(ValueError, match="sentence feature"):
        text(ids, mask, bow)


def test_hybrid_head_gives_unit_latents_and_tag_probabilities():
    head = HybridHead(10, latent_dim=6, concept_dim=5, dropout=0.2)
    bound = math.sqrt(6 / (10 + 6))
    assert float(head.latent.weight.detach().abs().max()) <= bound and not head.latent.bias.detach().any()
    latent, concept = head.eval()(torch.randn(4, 10))
    torch.testing.assert_close(latent.norm(dim=1), torch.ones(4))
    assert concept.shape == (4, 5) and bool(((concept > 0) & (concept < 1)).all())
    assert HybridHead(10, 6, concept_dim=0)(torch.randn(3, 10))[1] is None


def test_rivrl_is_a_visual_encoder_kind_with_its_own_options():
    options = {"preview_size": 4, "intensive_dim": 8, "key_dim": 4}
    model = build_visual_encoder("rivrl", 12, hidden=64, options=options).eval()
    videos, mask = frames([5, 3], 12)
    encoded = model(videos, mask)
    assert model.out_dim == 8 + 16 and encoded.pooled.shape == (2, 24) and encoded.tokens.shape == (2, 1, 24)
    with pytest.raises(TypeError, match="visual_dropout"):
        build_visual_encoder("rivrl", 12, options={"visual_dropout": 0.1})
