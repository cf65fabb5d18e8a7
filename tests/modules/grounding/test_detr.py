"""The DETR layers of ``modules/detr.py`` directly: shapes, masks, and invariance to padding (spec §1)."""

from __future__ import annotations

import math

import pytest
import torch

from leccr_lightning.modules.detr import (
    MLP,
    EncoderLayer,
    GlobalSaliencyHead,
    JointEncoder,
    SpanDecoder,
    T2VEncoder,
    anchor_sine_embedding,
    input_projection,
    inverse_sigmoid,
    sine_position_encoding,
)

D, HEADS, FFN = 16, 2, 32


def _pad(x: torch.Tensor, mask: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, T, d] with ``extra`` more padded (random, masked-out) steps, and the grown mask."""
    noise = torch.randn(x.shape[0], extra, *x.shape[2:], generator=torch.Generator().manual_seed(9))
    return torch.cat([x, noise], 1), torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    video_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    text_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    return {
        "video": torch.randn(2, 6, D, generator=gen),
        "video_mask": video_mask,
        "text": torch.randn(2, 5, D, generator=gen),
        "text_mask": text_mask,
    }


def test_projection_mlp_and_helpers_shapes() -> None:
    proj = input_projection(10, D, n_layers=2, dropout=0.5)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["LayerNorm", "Dropout", "Linear", "ReLU", "LayerNorm", "Dropout", "Linear"]  # no ReLU last
    assert proj(torch.randn(3, 7, 10)).shape == (3, 7, D)
    assert MLP(D, D, 2, 3)(torch.randn(4, D)).shape == (4, 2) and len(MLP(D, D, 2, 3).layers) == 3
    x = torch.tensor([0.0, 1e-4, 0.3, 1.0])
    assert torch.allclose(inverse_sigmoid(x).sigmoid()[1:3], x[1:3].clamp(1e-3, 1 - 1e-3), atol=1e-6)
    emb = anchor_sine_embedding(torch.rand(3, 4, 2), D // 2)
    assert emb.shape == (3, 4, D) and emb.abs().max() <= 1.0


def test_sine_positions_are_normalised_and_ignore_padding() -> None:
    mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2])
    pos = sine_position_encoding(mask, D)
    assert pos.shape == (2, 4, D)
    # the last valid clip sits at 2 pi: sin(2 pi / 1) on the first feature
    assert pos[0, 3, 0].item() == pytest.approx(math.sin(2 * math.pi * 4 / (4 + 1e-6)), abs=1e-5)
    longer = sine_position_encoding(torch.cat([mask, mask.new_zeros(2, 3)], 1), D)
    assert torch.allclose(longer[:, :4][mask], pos[mask])


def test_encoder_layer_is_invariant_to_padding(inputs) -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(D, HEADS, FFN, dropout=0.0).eval()
    x, mask = inputs["video"], inputs["video_mask"]
    pos = sine_position_encoding(mask, D)
    out = layer(x, ~mask, pos)
    padded, padded_mask = _pad(x, mask, 3)
    out_padded = layer(padded, ~padded_mask, sine_position_encoding(padded_mask, D))
    assert out.shape == x.shape
    assert torch.allclose(out_padded[:, :6][mask], out[mask], atol=1e-5)


def test_joint_and_t2v_encoders_are_invariant_to_padding(inputs) -> None:
    torch.manual_seed(0)
    joint = JointEncoder(D, HEADS, 2, FFN, dropout=0.0).eval()
    memory, mask, pos = joint(**inputs)
    assert memory.shape == (2, 6 + 5, D)
    assert torch.equal(mask, torch.cat([inputs["video_mask"], inputs["text_mask"]], 1))
    assert (pos[:, 6:] == 0).all()  # no text positions
    t2v = T2VEncoder(D, HEADS, 1, 1, FFN, dropout=0.0).eval()
    memory, mask, pos = t2v(**inputs)
    assert memory.shape == (2, 1 + 6, D) and mask[:, 0].all() and torch.equal(mask[:, 1:], inputs["video_mask"])
    text, text_mask = _pad(inputs["text"], inputs["text_mask"], 2)
    video, video_mask = _pad(inputs["video"], inputs["video_mask"], 3)
    padded, _, _ = t2v(video, video_mask, text, text_mask)
    valid = torch.cat([mask[:, :1], inputs["video_mask"]], 1)
    assert torch.allclose(padded[:, :7][valid], memory[valid], atol=1e-5)
    shuffled = dict(inputs, text=inputs["text"].roll(1, 0), text_mask=inputs["text_mask"].roll(1, 0))
    assert not torch.allclose(t2v(**shuffled)[0], memory)  # the video depends on the query


@pytest.mark.parametrize("anchor_mode", [False, True])
def test_decoder_shapes_and_memory_padding_invariance(inputs, anchor_mode: bool) -> None:
    torch.manual_seed(0)
    decoder = SpanDecoder(D, HEADS, 2, FFN, dropout=0.0, num_queries=3, anchor_mode=anchor_mode).eval()
    memory, mask = inputs["video"], inputs["video_mask"]
    pos = sine_position_encoding(mask, D)
    anchors = torch.randn(2, 3, 2) if anchor_mode else None
    hidden, spans = decoder(memory, mask, pos, anchors=anchors)
    assert hidden.shape == (2, 2, 3, D) and spans.shape == (2, 2, 3, 2)
    assert ((spans > 0) & (spans < 1)).all()
    padded, padded_mask = _pad(memory, mask, 4)
    hidden_p, spans_p = decoder(padded, padded_mask, sine_position_encoding(padded_mask, D), anchors=anchors)
    assert torch.allclose(hidden_p, hidden, atol=1e-5) and torch.allclose(spans_p, spans, atol=1e-6)
    if anchor_mode:
        with pytest.raises(ValueError, match="needs anchors"):
            decoder(memory, mask, pos)


def test_global_saliency_head() -> None:
    head = GlobalSaliencyHead(D)
    memory = torch.randn(2, 1 + 5, D)
    scores = head(memory)
    expected = (head.clip_proj(memory[:, 1:]) * head.global_proj(memory[:, :1])).sum(-1) / math.sqrt(D)
    assert scores.shape == (2, 5) and torch.allclose(scores, expected)
