"""The DETR layers of ``modules/detr.py`` directly: shapes, masks, initialisation and invariance to padding (spec
§1). Their agreement with the official layers is in ``tests/parity/``."""

from __future__ import annotations

import math

import pytest
import torch

from leccr_lightning.modules.detr import (
    MLP,
    AnchorDecoder,
    EncoderLayer,
    GlobalSaliencyHead,
    JointEncoder,
    ProjectionFreeAttention,
    QueryDecoder,
    T2VEncoder,
    activation_layer,
    anchor_sine_embedding,
    input_projection,
    inverse_sigmoid,
    sine_position_encoding,
)

D, HEADS, FFN = 16, 2, 32


def _pad(x: torch.Tensor, mask: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, T, d] with ``extra`` more padded (random, masked-out) steps, and the grown mask."""
    noise = torch.randn(x.shape[0], extra, *x.shape[2:], generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    return torch.cat([x, noise], 1), torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(2, 6, D, generator=gen),
        "video_mask": torch.tensor([[True] * 6, [True] * 4 + [False] * 2]),
        "text": torch.randn(2, 5, D, generator=gen),
        "text_mask": torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
    }


def test_projection_mlp_and_helpers() -> None:
    proj = input_projection(10, D, n_layers=2, dropout=0.5)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["LayerNorm", "Dropout", "Linear", "ReLU", "LayerNorm", "Dropout", "Linear"]  # no ReLU last
    assert proj(torch.randn(3, 7, 10)).shape == (3, 7, D)
    assert MLP(D, D, 2, 3)(torch.randn(4, D)).shape == (4, 2) and len(MLP(D, D, 2, 3).layers) == 3
    x = torch.tensor([-0.5, 0.0, 1e-4, 0.3, 1.0, 1.5])
    expected = torch.log(torch.tensor([1e-3, 1e-3, 1e-3 / 0.9999, 0.3 / 0.7, 1 / 1e-3, 1 / 1e-3]))
    assert torch.allclose(inverse_sigmoid(x), expected, atol=1e-6)
    emb = anchor_sine_embedding(torch.rand(3, 4, 2), D // 2)
    assert emb.shape == (3, 4, D) and emb.abs().max() <= 1.0
    assert isinstance(activation_layer("prelu"), torch.nn.PReLU) and isinstance(activation_layer("relu"), torch.nn.ReLU)
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_layer("gelu")


def test_sine_positions_are_normalised_and_ignore_padding() -> None:
    mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2])
    pos = sine_position_encoding(mask, D)
    assert pos.shape == (2, 4, D)
    assert pos[0, 3, 0].item() == pytest.approx(math.sin(2 * math.pi * 4 / (4 + 1e-6)), abs=1e-5)  # last clip: 2 pi
    longer = sine_position_encoding(torch.cat([mask, mask.new_zeros(2, 3)], 1), D)
    assert torch.allclose(longer[:, :4][mask], pos[mask])


def test_encoder_layer_is_invariant_to_padding(inputs) -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(D, HEADS, FFN, dropout=0.0).eval()
    x, mask = inputs["video"], inputs["video_mask"]
    out = layer(x, mask, sine_position_encoding(mask, D))
    padded, padded_mask = _pad(x, mask, 3)
    out_padded = layer(padded, padded_mask, sine_position_encoding(padded_mask, D))
    assert out.shape == x.shape
    assert torch.allclose(out_padded[:, :6][mask], out[mask], atol=1e-5)


def test_transformers_are_xavier_initialised() -> None:
    torch.manual_seed(0)
    for module in (
        JointEncoder(64, 4, 1, 128, 0.1),
        QueryDecoder(64, 4, 1, 128, 0.1),
        AnchorDecoder(64, 4, 2, 128, 0.1),
    ):
        for name, p in module.named_parameters():
            if p.dim() > 1:
                bound = math.sqrt(6 / (p.shape[0] + p.shape[1]))
                assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound, name
    decoder = AnchorDecoder(64, 4, 2, 128, 0.1)
    assert (decoder.bbox_embed.layers[-1].bias == 0).all() and decoder.bbox_embed.layers[-1].weight.abs().sum() > 0
    assert decoder.layers[0].ca_qpos_proj is not None and decoder.layers[1].ca_qpos_proj is None
    encoder = T2VEncoder(256, 8, 1, 1, 64, 0.1)
    assert 0.85 < encoder.global_token.std().item() < 1.15 and 0.85 < encoder.global_pos.std().item() < 1.15
    assert isinstance(encoder.t2v[0].ffn.activation, torch.nn.PReLU)


def test_joint_encoder_and_query_decoder(inputs) -> None:
    torch.manual_seed(0)
    joint = JointEncoder(D, HEADS, 2, FFN, dropout=0.0).eval()
    memory, mask, pos = joint(**inputs)
    assert memory.shape == (2, 6 + 5, D)
    assert torch.equal(mask, torch.cat([inputs["video_mask"], inputs["text_mask"]], 1))
    assert (pos[:, 6:] == 0).all()  # no text positions
    decoder = QueryDecoder(D, HEADS, 2, FFN, dropout=0.0).eval()
    queries = torch.randn(3, D)
    hidden = decoder(queries, memory, mask, pos)
    assert hidden.shape == (2, 2, 3, D)
    assert torch.allclose(hidden[-1].mean(-1), torch.zeros(2, 3), atol=1e-5)  # the final LayerNorm
    padded, padded_mask = _pad(memory, mask, 4)
    assert torch.allclose(decoder(queries, padded, padded_mask, _pad(pos, mask, 4)[0]), hidden, atol=1e-5)


def test_t2v_encoder_pads_and_depends_on_the_query(inputs) -> None:
    torch.manual_seed(0)
    t2v = T2VEncoder(D, HEADS, 1, 1, FFN, dropout=0.0).eval()
    clips, global_token, pos = t2v(**inputs)
    assert clips.shape == (2, 6, D) and global_token.shape == (2, D) and pos.shape == (2, 6, D)
    text, text_mask = _pad(inputs["text"], inputs["text_mask"], 2)
    video, video_mask = _pad(inputs["video"], inputs["video_mask"], 3)
    clips_p, global_p, _ = t2v(video, video_mask, text, text_mask)
    valid = inputs["video_mask"]
    assert torch.allclose(clips_p[:, :6][valid], clips[valid], atol=1e-5)
    assert torch.allclose(global_p, global_token, atol=1e-5)
    shuffled = dict(inputs, text=inputs["text"].roll(1, 0), text_mask=inputs["text_mask"].roll(1, 0))
    assert not torch.allclose(t2v(**shuffled)[0], clips)  # the video depends on the query


def test_anchor_decoder_shapes_references_and_padding(inputs) -> None:
    torch.manual_seed(0)
    decoder = AnchorDecoder(D, HEADS, 3, FFN, dropout=0.0).eval()
    memory, mask = inputs["video"], inputs["video_mask"]
    pos = sine_position_encoding(mask, D)
    anchors = torch.randn(2, 4, 2, requires_grad=True)
    hidden, refs = decoder(memory, mask, pos, anchors)
    assert hidden.shape == (3, 2, 4, D) and refs.shape == (3, 2, 4, 2)
    assert torch.allclose(refs[0], anchors.sigmoid()) and ((refs > 0) & (refs < 1)).all()
    refs[1:].sum().backward()  # refined references keep their gradient into bbox_embed
    assert decoder.bbox_embed.layers[-1].weight.grad.abs().sum() > 0
    padded, padded_mask = _pad(memory, mask, 4)
    hidden_p, refs_p = decoder(padded, padded_mask, sine_position_encoding(padded_mask, D), anchors)
    assert torch.allclose(hidden_p, hidden, atol=1e-5) and torch.allclose(refs_p, refs, atol=1e-6)
    decoder.refine = False
    _, fixed = decoder(memory, mask, pos, anchors)
    assert torch.equal(fixed, anchors.sigmoid().expand(3, -1, -1, -1))


def test_projection_free_attention_masks_keys() -> None:
    torch.manual_seed(0)
    attention = ProjectionFreeAttention(heads=2, value_dim=4, dropout=0.0)
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, False, True, False]])
    out = attention(q, k, v, mask)
    scores = (q.view(1, 3, 2, 4).transpose(1, 2) @ k.view(1, 5, 2, 4).permute(0, 2, 3, 1)) / 2.0
    weights = scores.masked_fill(~mask[:, None, None], float("-inf")).softmax(-1)
    heads = (weights @ v.view(1, 5, 2, 2).transpose(1, 2)).transpose(1, 2).reshape(1, 3, 4)
    assert torch.allclose(out, attention.out_proj(heads), atol=1e-6) and (attention.out_proj.bias == 0).all()


def test_global_saliency_head() -> None:
    head = GlobalSaliencyHead(D)
    clips, global_token = torch.randn(2, 5, D), torch.randn(2, D)
    scores = head(clips, global_token)
    expected = (head.clip_proj(clips) * head.global_proj(global_token)[:, None]).sum(-1) / math.sqrt(D)
    assert scores.shape == (2, 5) and torch.allclose(scores, expected)
