"""Building blocks: the Hugging Face text encoder (tiny, local directory, partial fine-tuning, pooling), the frame
transformer's padding invariance and the projection head."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.modules.heads import ProjectionHead
from leccr_lightning.modules.pooling import pool
from leccr_lightning.modules.text_encoders import HFTextEncoder
from leccr_lightning.modules.visual_encoders import (
    VISUAL_ENCODERS,
    FeatureMLP,
    FrameTransformer,
    build_visual_encoder,
)


def tokens():
    input_ids = torch.tensor([[2, 7, 8, 3, 0, 0], [2, 9, 10, 11, 12, 3]])
    return input_ids, (input_ids != 0).long()


def test_tiny_encoder_masked_mean_ignores_padding():
    torch.manual_seed(0)
    encoder = HFTextEncoder("tiny", vocab_size=20, hidden_size=16, num_layers=1, num_heads=2).eval()
    input_ids, mask = tokens()
    states, pooled = encoder(input_ids, mask)
    assert states.shape == (2, 6, 16) and pooled.shape == (2, 16)
    changed = input_ids.clone()
    changed[0, 4:] = 5
    _, pooled_changed = encoder(changed, mask)
    assert torch.allclose(pooled[0], pooled_changed[0], atol=1e-6)
    assert torch.allclose(pool(states, mask, "cls"), states[:, 0])
    assert not torch.allclose(pool(states, mask, "mean", unmasked_mean=True)[0], pooled[0])


def test_trainable_layers_freeze_everything_else():
    encoder = HFTextEncoder("tiny", vocab_size=20, hidden_size=16, num_layers=3, num_heads=2, trainable_layers=[1, 2])
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.1." in n or ".layer.2." in n for n in trainable)
    assert not any("embeddings" in n or ".layer.0." in n for n in trainable)


def test_local_directory_loads_the_saved_weights(tmp_path):
    torch.manual_seed(1)
    tiny = HFTextEncoder("tiny", vocab_size=20, hidden_size=16, num_layers=1, num_heads=2).eval()
    tiny.backbone.save_pretrained(tmp_path / "model")
    loaded = HFTextEncoder(str(tmp_path / "model")).eval()
    input_ids, mask = tokens()
    assert torch.allclose(tiny(input_ids, mask)[1], loaded(input_ids, mask)[1], atol=1e-6)


def test_hub_name_offline_names_the_config_key():
    with pytest.raises(OSError, match="model.init_args.text_model"):
        HFTextEncoder("some-org/not-cached-model-xyz")


def test_frame_transformer_ignores_padded_frames():
    torch.manual_seed(2)
    encoder = FrameTransformer(in_dim=6, hidden=8, num_heads=2, max_frames=10, dropout=0.0).eval()
    frames = torch.randn(1, 5, 6)
    mask = torch.tensor([[True, True, True, False, False]])
    garbage = frames.clone()
    garbage[0, 3:] = 100.0
    assert torch.allclose(encoder(frames, mask).pooled, encoder(garbage, mask).pooled, atol=1e-5)
    assert FeatureMLP(6, 8)(frames, mask).pooled.shape == (1, 8)


@pytest.mark.parametrize("kind", sorted(VISUAL_ENCODERS))
def test_every_visual_encoder_kind_builds_and_ignores_padding(kind):
    torch.manual_seed(3)
    in_dim = 3 if kind == "timm" else 6
    options = {"visern": {"regions_per_frame": 5}}.get(kind)  # one frame of five regions
    encoder = build_visual_encoder(
        kind, in_dim, hidden=8, heads=2, dropout=0.0, timm_model="test_resnet", options=options
    )
    encoder.eval()
    if kind == "timm":
        visual, mask = torch.rand(2, 3, 32, 32), torch.ones(2, 1, dtype=torch.bool)
    else:
        visual, mask = torch.randn(2, 5, in_dim), torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = encoder(visual, mask)
    assert out.tokens.shape[0] == 2 and out.pooled.shape == (2, encoder.out_dim)
    assert out.tokens.shape[-1] == getattr(encoder, "token_dim", encoder.out_dim)
    assert out.mask.dtype == torch.bool and out.mask.shape == out.tokens.shape[:2]
    if kind != "timm":
        garbage = visual.clone()
        garbage[1, 2:] = 50.0
        assert torch.allclose(encoder(garbage, mask).pooled, out.pooled, atol=1e-5)


def test_unknown_visual_encoder_lists_the_known_ones():
    with pytest.raises(ValueError, match="expected one of"):
        build_visual_encoder("resnet", 6, hidden=8)
    with pytest.raises(ValueError, match="hidden"):
        build_visual_encoder("mlp", 6)


def test_projection_head_gives_unit_vectors():
    head = ProjectionHead(8, 4, batch_norm=True, dropout=0.2).eval()
    out = head(torch.randn(5, 8))
    assert torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-6)
