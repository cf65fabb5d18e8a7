"""ViSERN's region reasoning (itr spec §2.4) and ProTA's token matching (§3.4): adjacency normalisers, permutation
equivariance and invariance, identity at initialisation, zero mass for absent regions, the multi-level encoders, the
``visern`` visual encoder of the CCR methods, softmax-weighted aggregation limits and the multi-kernel Gram."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.modules.graph_reasoning import NORMALIZERS, RegionGCNLayer, RegionReasoning, normalize_adjacency
from leccr_lightning.modules.multilevel import MultiLevelTextEncoder, MultiLevelVideoEncoder
from leccr_lightning.modules.prota import GaussianTokenHead, TemporalTransformer, build_clip, clip_text_tokens
from leccr_lightning.modules.token_aggregation import dual_partial_aggregation, multi_kernel_gram, softmax_weighted
from leccr_lightning.modules.visern import ViSERNVideoEncoder
from leccr_lightning.modules.visual_encoders import build_visual_encoder


def regions_with_absent(seed: int = 0, batch: int = 3, frames: int = 4, regions: int = 5, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, frames, regions, dim, generator=generator)
    mask = torch.rand(batch, frames, regions, generator=generator) < 0.7
    mask[..., 0] = True
    return values * mask[..., None], mask


@pytest.mark.parametrize("mode", NORMALIZERS)
def test_absent_regions_get_zero_transition_mass(mode):
    affinity = torch.randn(2, 6, 6)
    mask = torch.tensor([[True, True, False, True, False, True], [True] * 6])
    transition = normalize_adjacency(affinity, mask, mode)
    absent = ~mask
    assert not transition[0][absent[0]].any() and not transition[0][:, absent[0]].any()


@pytest.mark.parametrize("mode", ["random_walk", "row_softmax"])
def test_random_walk_rows_are_probability_distributions(mode):
    affinity = torch.randn(3, 7, 7) * 3
    affinity[0] = -affinity[0].abs()  # every affinity negative: ReLU zeroes them, the self loop keeps the row
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    transition = normalize_adjacency(affinity, mask, mode)
    assert (transition >= 0).all()
    assert torch.allclose(transition.sum(-1)[mask], torch.ones(int(mask.sum())))
    assert torch.allclose(transition[0], torch.eye(7)) or mode == "row_softmax"


@pytest.mark.parametrize("mode", NORMALIZERS)
def test_permuting_regions_permutes_the_transition_matrix(mode):
    affinity = torch.randn(6, 6)
    mask = torch.tensor([True, True, True, False, True, True])
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    permuted = normalize_adjacency(affinity[order][:, order], mask[order], mode)
    assert torch.allclose(permuted, normalize_adjacency(affinity, mask, mode)[order][:, order], atol=1e-6)


@pytest.mark.parametrize("output_norm", ["batch", "none"])
def test_the_gcn_stack_is_the_identity_at_initialisation(output_norm):
    values, mask = regions_with_absent()
    stack = RegionReasoning(8, layers=3, output_norm=output_norm)
    assert torch.allclose(stack(values, mask), values, atol=1e-6)


def trained_like_layer(normalizer: str = "random_walk") -> RegionGCNLayer:
    """A layer whose BN scale is not zero (so the update is not trivially zero), in eval mode."""
    torch.manual_seed(0)
    layer = RegionGCNLayer(8, normalizer=normalizer)
    torch.nn.init.normal_(layer.norm.weight)
    layer.norm.running_var.uniform_(0.5, 2.0)
    return layer.eval()


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_the_gcn_is_permutation_equivariant_and_ignores_absent_regions(normalizer):
    layer = trained_like_layer(normalizer)
    values, mask = regions_with_absent()
    out = layer(values, mask)
    assert not torch.allclose(out, values)
    order = torch.randperm(5, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(layer(values[:, :, order], mask[:, :, order]), out[:, :, order], atol=1e-5)
    garbage = values + 100 * (~mask[..., None]) * torch.randn_like(values)
    assert torch.allclose(layer(garbage, mask), out, atol=1e-5)
    assert not out[~mask].any()


def test_frame_pooling_makes_the_video_encoder_invariant_to_region_order():
    torch.manual_seed(0)
    encoder = ViSERNVideoEncoder(8, width=16, gcn_layers=2, gru_hidden=8, kernel_sizes=(2, 3), filters=4).eval()
    for layer in encoder.reasoning.layers:
        torch.nn.init.normal_(layer.norm.weight)
    values, mask = regions_with_absent()
    out = encoder(values, mask)
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    shuffled = encoder(values[:, :, order], mask[:, :, order])
    assert torch.allclose(shuffled.pooled, out.pooled, atol=1e-5)
    assert out.pooled.shape == (3, 16 + 2 * 8 + 2 * 4) and out.tokens.shape == (3, 4, 16)


def test_the_visern_encoder_reads_flattened_regions_as_a_registered_visual_encoder():
    torch.manual_seed(0)
    encoder = build_visual_encoder(
        "visern", 8, hidden=16, options={"regions_per_frame": 5, "gcn_layers": 1, "gru_hidden": 8, "filters": 4}
    ).eval()
    values, mask = regions_with_absent()
    flat = encoder(values.flatten(1, 2), mask.flatten(1, 2))
    assert torch.allclose(flat.pooled, encoder(values, mask).pooled)
    with pytest.raises(ValueError, match="not a multiple of regions_per_frame=5"):
        encoder(values.flatten(1, 2)[:, :-1], mask.flatten(1, 2)[:, :-1])


def test_frames_without_regions_inside_a_video_stay_valid_frames():
    encoder = ViSERNVideoEncoder(8, width=16, gcn_layers=1, gru_hidden=8, kernel_sizes=(2,), filters=4).eval()
    values, mask = regions_with_absent(batch=1)
    mask[0, 1] = False
    mask[0, 3] = False
    assert encoder(values * mask[..., None], mask).mask.tolist() == [[True, True, True, False]]


def test_multi_level_encoders_ignore_padding():
    torch.manual_seed(0)
    video = MultiLevelVideoEncoder(6, hidden=5, kernel_sizes=(2, 3), filters=4).eval()
    frames = torch.randn(1, 4, 6)
    short = video(frames[:, :3], torch.ones(1, 3, dtype=torch.bool))
    padded = video(torch.cat([frames[:, :3], 50 * torch.ones(1, 1, 6)], 1), torch.tensor([[True, True, True, False]]))
    assert torch.allclose(short, padded, atol=1e-6)
    text = MultiLevelTextEncoder(20, word_dim=6, hidden=5, kernel_sizes=(2,), filters=3).eval()
    ids = torch.tensor([[3, 4, 4, 0, 0]])
    out = text(ids, torch.tensor([[1, 1, 1, 0, 0]]))
    assert out[0, 4] == 2 and out[0, 3] == 1 and out[0, 0] == 0
    assert torch.allclose(out, text(ids[:, :3], torch.ones(1, 3)), atol=1e-6)


def test_softmax_weighted_aggregation_goes_from_the_mean_to_the_max():
    similarity = torch.randn(4, 7)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[:, 5:] = False
    masked = similarity.masked_fill(~mask, float("nan"))
    assert torch.allclose(softmax_weighted(similarity, mask, 1e-6, dim=1), masked.nanmean(1), atol=1e-5)
    assert torch.allclose(softmax_weighted(similarity, mask, 1e4, dim=1), similarity[:, :5].amax(1), atol=1e-4)


def test_dual_partial_aggregation_ignores_padded_tokens_and_is_symmetric_in_its_roles():
    similarity = torch.rand(2, 5, 3, 4)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    video_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    scores = dual_partial_aggregation(similarity, text_mask, video_mask, 5.0)
    noisy = similarity + 10 * ~(text_mask[:, :, None, None] & video_mask[None, None])
    assert torch.allclose(dual_partial_aggregation(noisy, text_mask, video_mask, 5.0), scores)
    swapped = dual_partial_aggregation(similarity.permute(2, 3, 0, 1), video_mask, text_mask, 5.0)
    assert torch.allclose(swapped.T, scores, atol=1e-6)


def test_multi_kernel_gram_is_one_at_distance_zero_and_decreasing():
    distance = torch.tensor([0.0, 0.5, 2.0, 8.0])
    gram = multi_kernel_gram(distance, (0.5, 1.0, 2.0))
    assert gram[0] == 1 and (gram.diff() < 0).all()
    with pytest.raises(ValueError, match="positive"):
        multi_kernel_gram(distance, (1.0, 0.0))


def test_gaussian_head_starts_near_points_and_temporal_transformer_masks_padding():
    head = GaussianTokenHead(6, logvar_init=-4.0)
    tokens = head(torch.randn(2, 3, 6), torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert torch.allclose(tokens.mean.norm(dim=-1)[tokens.mask], torch.ones(5))
    assert torch.allclose(tokens.std[tokens.mask], torch.full((5, 6), float(torch.exp(torch.tensor(-2.0)))))
    assert not tokens.std[~tokens.mask].any()
    temporal = TemporalTransformer(8, layers=1, heads=2, max_frames=6).eval()
    frames = torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, True, False]])
    garbage = frames.clone()
    garbage[0, 3] = 99
    assert torch.allclose(temporal(frames, mask), temporal(garbage, mask), atol=1e-5)


def test_a_tiny_random_clip_loads_from_a_local_directory(tmp_path):
    clip = build_clip("tiny", vocab_size=50, width=32, layers=1, heads=2, projection_dim=16)
    clip.save_pretrained(tmp_path / "clip")
    loaded = build_clip(str(tmp_path / "clip"))
    ids = torch.tensor([[1, 5, 7, 2]])
    out = clip_text_tokens(loaded.eval(), ids, torch.ones_like(ids))
    assert torch.allclose(out, clip_text_tokens(clip.eval(), ids, torch.ones_like(ids)))
    assert out.shape == (1, 4, 16)
    with pytest.raises(OSError, match="clip_model"):
        build_clip(str(tmp_path / "absent"))
