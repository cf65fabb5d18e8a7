"""Parity with the official QD-DETR (wjun0830/QD-DETR @ 56c63b2).

Each ``ref_*`` is our own re-implementation of an official function, written from reading it (``repo:path:line``
cited), compared with the package on random inputs: the saliency losses and their gradients to 1e-6 in float64,
the T2V encoder, the DAB-DETR decoder and the whole model with shared weights (hidden size 256, which the official
sine embedding assumes), invariance to padding, the negative pairs and the saliency labels. The matcher and the
span / label / hinge terms QD-DETR shares with Moment-DETR are in ``test_moment_detr.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leccr_lightning.data.grounding.annotations import GroundingRecord
from leccr_lightning.data.grounding.saliency import NO_HARD_PAIR, draw_saliency_pairs, saliency_labels
from leccr_lightning.losses.spans import negative_pair_loss, rank_contrastive_loss, saliency_hinge_loss
from leccr_lightning.methods.grounding.qd_detr import QDDETR
from leccr_lightning.modules.detr import anchor_sine_embedding, inverse_sigmoid
from tests.parity.test_moment_detr import ref_linear_layers, ref_sine_position  # QD-DETR keeps these pieces

TOL = {"atol": 1e-6, "rtol": 1e-6}


# --- official saliency loss (qd_detr/model.py:291-361) -------------------------------------------------------------
def ref_loss_saliency(outputs: dict, targets: dict, margin: float = 0.2) -> dict[str, torch.Tensor]:
    """model.py:291-361: negative-pair term, rank-contrastive term and hinge; returns each and their sum."""
    vid_token_mask = outputs["video_mask"]
    saliency_scores_neg = outputs["saliency_scores_neg"].clone()
    loss_neg_pair = (-torch.log(1.0 - torch.sigmoid(saliency_scores_neg)) * vid_token_mask).sum(dim=1).mean()
    saliency_scores = torch.cat([outputs["saliency_scores"].clone(), saliency_scores_neg], dim=1)
    label = targets["saliency_all_labels"]
    label = torch.cat([label, torch.zeros_like(label)], dim=1)
    vid_token_mask = vid_token_mask.repeat([1, 2])
    saliency_scores = vid_token_mask * saliency_scores + (1.0 - vid_token_mask) * -1e3
    tau, loss_rank = 0.5, 0.0
    for rand_idx in range(1, 12):
        drop_mask = ~(label > 100)
        pos_mask = label >= rand_idx
        if torch.sum(pos_mask) == 0:
            continue
        batch_drop_mask = torch.sum(pos_mask, dim=1) > 0
        cur = saliency_scores * drop_mask / tau + ~drop_mask * -1e3
        logits = cur - torch.max(cur, dim=1, keepdim=True)[0]
        log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True) + 1e-6)
        mean_log_prob_pos = (pos_mask * log_prob * vid_token_mask).sum(1) / (pos_mask.sum(1) + 1e-6)
        loss_rank = loss_rank + (-mean_log_prob_pos * batch_drop_mask).mean()
    loss_rank = loss_rank / 12
    scores = outputs["saliency_scores"]
    pos, neg = targets["saliency_pos_labels"], targets["saliency_neg_labels"]
    batch = torch.arange(len(scores))
    pos_scores = torch.stack([scores[batch, pos[:, c]] for c in range(pos.shape[1])], dim=1)
    neg_scores = torch.stack([scores[batch, neg[:, c]] for c in range(pos.shape[1])], dim=1)
    hinge = torch.clamp(margin + neg_scores - pos_scores, min=0).sum() / (len(pos_scores) * pos.shape[1]) * 2
    return {"neg": loss_neg_pair, "rank": loss_rank, "hinge": hinge, "total": hinge + loss_rank + loss_neg_pair}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saliency_losses_and_gradients_equal_the_official_ones(seed: int) -> None:
    """Item 18: the rank-contrastive loss averages over the whole batch, samples without positives at rank r x 0."""
    gen = torch.Generator().manual_seed(seed)
    b, t = 5, 9
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 6:], mask[3, 4:] = False, False
    labels = torch.randint(0, 13, (b, t), generator=gen).double() * mask
    labels[2] = 0  # a sample without any positive
    labels[4] = labels[4].clamp(max=3)  # positives only at the low ranks
    s = torch.randn(b, t, generator=gen, dtype=torch.float64, requires_grad=True)
    s_neg = torch.randn(b, t, generator=gen, dtype=torch.float64, requires_grad=True)
    pos, neg = torch.randint(0, 4, (b, 2), generator=gen), torch.randint(0, 4, (b, 2), generator=gen)
    outputs = {"saliency_scores": s, "saliency_scores_neg": s_neg, "video_mask": mask.double()}
    targets = {"saliency_all_labels": labels, "saliency_pos_labels": pos, "saliency_neg_labels": neg}
    ref = ref_loss_saliency(outputs, targets)
    ours = {
        "neg": negative_pair_loss(s_neg, mask),
        "rank": rank_contrastive_loss(s, s_neg, labels, mask),
        "hinge": saliency_hinge_loss(s, pos, neg),
    }
    for key, value in ours.items():
        assert value.item() == pytest.approx(ref[key].item(), rel=1e-10, abs=1e-12), key
    total = sum(ours.values())
    for g, r in zip(torch.autograd.grad(total, (s, s_neg)), torch.autograd.grad(ref["total"], (s, s_neg)), strict=True):
        assert torch.allclose(g, r, **TOL)
    skipped_mean = 0.0  # the old normalisation: the mean over the samples with positives only
    for r in range(1, 12):
        logits = (torch.cat([s, s_neg], 1) / 0.5).masked_fill(~torch.cat([mask, mask], 1), -1e3)
        pos_r = torch.cat([(labels >= r) & mask, torch.zeros_like(mask)], 1).double()
        has = pos_r.sum(1) > 0
        if has.any():
            per = -(logits.log_softmax(1) * pos_r).sum(1) / pos_r.sum(1).clamp(min=1)
            skipped_mean = skipped_mean + per[has].mean()
    assert abs(skipped_mean / 12 - ours["rank"].item()) > 1e-3  # this test tells the two apart


# --- official transformer (qd_detr/transformer.py) -----------------------------------------------------------------
def ref_inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """model.py:16-20."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def ref_gen_sineembed(pos_tensor: torch.Tensor) -> torch.Tensor:
    """transformer.py:40-55 (128 values per coordinate)."""
    scale = 2 * math.pi
    dim_t = torch.arange(128, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / 128)
    pos_x = (pos_tensor[:, :, 0] * scale)[:, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
    pos_w = (pos_tensor[:, :, 1] * scale)[:, :, None] / dim_t
    pos_w = torch.stack((pos_w[:, :, 0::2].sin(), pos_w[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_x, pos_w), dim=2)


def ref_t2v_layer(layer, src: torch.Tensor, pad: torch.Tensor, pos: torch.Tensor, video_length: int) -> torch.Tensor:
    """transformer.py:406-441 over src = [global; video; text] (batch-first); the pad-and-pad attention mask of
    :423-424 is implied by the text key padding."""
    pos_src = src + pos
    global_token, q = src[:, :1], pos_src[:, 1 : video_length + 1]
    k, v = pos_src[:, video_length + 1 :], src[:, video_length + 1 :]
    src2 = layer.cross_attn(q, k, value=v, key_padding_mask=pad[:, video_length + 1 :])[0]
    src2 = src[:, 1 : video_length + 1] + src2
    src3 = layer.ffn.linear2(layer.ffn.activation(layer.ffn.linear1(layer.norm1(src2))))
    src2 = layer.norm2(src2 + src3)
    return torch.cat([global_token, src2, src[:, video_length + 1 :]], dim=1)


def ref_encoder_layer(layer, src: torch.Tensor, pad: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """transformer.py:498-511 (PReLU activation, transformer.py:776)."""
    q = k = src + pos
    src = layer.norm1(src + layer.self_attn(q, k, value=src, key_padding_mask=pad)[0])
    return layer.norm2(src + layer.ffn.linear2(layer.ffn.activation(layer.ffn.linear1(src))))


def ref_attention(attn, query, key, value, key_padding_mask=None) -> torch.Tensor:
    """attention.py:281-387 without input projections: q * head_dim^-0.5, softmax over keys (padding at -inf), then
    the output projection; batch-first, no dropout (eval)."""
    b, lq, e = query.shape
    h = attn.heads
    q = (query * float(e // h) ** -0.5).view(b, lq, h, e // h).transpose(1, 2)
    k = key.view(b, -1, h, e // h).transpose(1, 2)
    v = value.view(b, -1, h, value.shape[-1] // h).transpose(1, 2)
    weights = q @ k.transpose(-1, -2)
    if key_padding_mask is not None:
        weights = weights.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    out = (weights.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, -1)
    return attn.out_proj(out)


def ref_decoder_layer(layer, tgt, memory, pad, pos, query_pos, query_sine_embed, is_first) -> torch.Tensor:
    """transformer.py:583-657 (batch-first)."""
    q = layer.sa_qcontent_proj(tgt) + layer.sa_qpos_proj(query_pos)
    k = layer.sa_kcontent_proj(tgt) + layer.sa_kpos_proj(query_pos)
    tgt = layer.norm1(tgt + ref_attention(layer.self_attn, q, k, layer.sa_v_proj(tgt)))
    q_content, k_content = layer.ca_qcontent_proj(tgt), layer.ca_kcontent_proj(memory)
    v, k_pos = layer.ca_v_proj(memory), layer.ca_kpos_proj(pos)
    if is_first:
        q, k = q_content + layer.ca_qpos_proj(query_pos), k_content + k_pos
    else:
        q, k = q_content, k_content
    b, nq, n_model = q.shape
    hw, heads = k.shape[1], layer.heads
    q = q.view(b, nq, heads, n_model // heads)
    sine = layer.ca_qpos_sine_proj(query_sine_embed).view(b, nq, heads, n_model // heads)
    q = torch.cat([q, sine], dim=3).view(b, nq, n_model * 2)
    k = torch.cat([k.view(b, hw, heads, -1), k_pos.view(b, hw, heads, -1)], dim=3).view(b, hw, n_model * 2)
    tgt = layer.norm2(tgt + ref_attention(layer.cross_attn, q, k, v, pad))
    return layer.norm3(tgt + layer.ffn.linear2(layer.ffn.activation(layer.ffn.linear1(tgt))))


def ref_decoder(decoder, memory, pad, pos, refpoints_unsigmoid):
    """transformer.py:232-319: DAB-DETR loop with cond_elewise scaling and width-modulated attention."""
    output = torch.zeros(*refpoints_unsigmoid.shape[:2], memory.shape[-1], dtype=memory.dtype)
    reference_points = refpoints_unsigmoid.sigmoid()
    ref_points, intermediate = [reference_points], []
    for layer_id, layer in enumerate(decoder.layers):
        obj_center = reference_points[..., :2]
        query_sine_embed = ref_gen_sineembed(obj_center).to(memory)
        query_pos = decoder.ref_point_head(query_sine_embed)
        pos_transformation = 1 if layer_id == 0 else decoder.query_scale(output)
        query_sine_embed = query_sine_embed * pos_transformation
        reft_cond = decoder.ref_anchor_head(output).sigmoid()
        query_sine_embed = query_sine_embed * (reft_cond[..., 0] / obj_center[..., 1]).unsqueeze(-1)
        output = ref_decoder_layer(layer, output, memory, pad, pos, query_pos, query_sine_embed, layer_id == 0)
        tmp = decoder.bbox_embed(output)
        new_reference_points = (tmp[..., :2] + ref_inverse_sigmoid(reference_points)).sigmoid()
        if layer_id != len(decoder.layers) - 1:
            ref_points.append(new_reference_points)
        reference_points = new_reference_points.detach()
        intermediate.append(decoder.norm(output))
    return torch.stack(intermediate), torch.stack(ref_points)


def ref_transformer(model: QDDETR, src_vid, src_vid_mask, src_txt, src_txt_mask):
    """model.py:110-132 and transformer.py:107-142: [global; video; text] with positions [global; sine; 0], T2V
    layers, self-attention over [global; video], decoder over the video memory. Returns hs, references, video
    memory and global memory."""
    d = model.hidden_dim
    b, video_length = src_vid.shape[:2]
    src = torch.cat([src_vid, src_txt], 1)
    mask = torch.cat([src_vid_mask, src_txt_mask], 1)
    pos = torch.cat([ref_sine_position(src_vid_mask, d).to(src), torch.zeros_like(src_txt)], 1)
    mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), mask], 1)
    src = torch.cat([model.encoder.global_token.reshape(1, 1, d).repeat(b, 1, 1), src], 1)
    pos = torch.cat([model.encoder.global_pos.reshape(1, 1, d).repeat(b, 1, 1), pos], 1)
    for layer in model.encoder.t2v:
        src = ref_t2v_layer(layer, src, ~mask, pos, video_length)
    src, mask, pos = src[:, : video_length + 1], mask[:, : video_length + 1], pos[:, : video_length + 1]
    for layer in model.encoder.layers:
        src = ref_encoder_layer(layer, src, ~mask, pos)
    memory_global, memory_local = src[:, 0], src[:, 1:]
    refpoints = model.anchors.weight.unsqueeze(0).repeat(b, 1, 1)
    hs, references = ref_decoder(model.decoder, memory_local, ~mask[:, 1:], pos[:, 1:], refpoints)
    return hs, references, memory_local, memory_global


def ref_qd_detr(model: QDDETR, batch: dict) -> dict[str, torch.Tensor]:
    """model.py:90-187 in eval: heads on the decoder states, saliency of the true and of the negative pairs (the
    text rolled so that sample i meets sample i + 1's query, model.py:160-161)."""
    src_vid = ref_linear_layers(model.video_proj, batch["visual"])
    src_txt = ref_linear_layers(model.text_proj, batch["text"])
    vid_mask, txt_mask = batch["visual_mask"], batch["text_mask"]
    hs, reference, vid_mem, glob = ref_transformer(model, src_vid, vid_mask, src_txt, txt_mask)
    spans = (model.span_head(hs) + ref_inverse_sigmoid(reference)).sigmoid()
    txt_neg = torch.cat([src_txt[1:], src_txt[0:1]], dim=0)
    txt_mask_neg = torch.cat([txt_mask[1:], txt_mask[0:1]], dim=0)
    _, _, vid_mem_neg, glob_neg = ref_transformer(model, src_vid, vid_mask, txt_neg, txt_mask_neg)
    d = model.hidden_dim
    head = model.saliency_head
    saliency = torch.sum(head.clip_proj(vid_mem) * head.global_proj(glob).unsqueeze(1), dim=-1) / np.sqrt(d)
    saliency_neg = torch.sum(head.clip_proj(vid_mem_neg) * head.global_proj(glob_neg).unsqueeze(1), -1) / np.sqrt(d)
    return {"logits": model.class_head(hs), "spans": spans, "saliency": saliency, "saliency_neg": saliency_neg}


def _batch(seed: int, visual_dim: int = 10, text_dim: int = 6) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "visual": torch.randn(3, 7, visual_dim, generator=gen, dtype=torch.float64),
        "visual_mask": torch.tensor([[True] * 7, [True] * 5 + [False] * 2, [True] * 3 + [False] * 4]),
        "text": torch.randn(3, 4, text_dim, generator=gen, dtype=torch.float64),
        "text_mask": torch.tensor([[True] * 4, [True] * 2 + [False] * 2, [True] * 3 + [False]]),
        "qid": [0, 1, 2],
    }


@pytest.fixture(scope="module")
def qd_detr() -> QDDETR:
    torch.manual_seed(0)
    sizes = {"hidden_dim": 256, "nheads": 8, "dim_feedforward": 64, "dropout": 0.0, "input_dropout": 0.0}
    model = QDDETR(visual_dim=10, text_dim=6, **sizes)
    return model.double().eval()


def test_sine_embedding_and_inverse_sigmoid_equal_the_official_ones() -> None:
    spans = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(anchor_sine_embedding(spans, 128), ref_gen_sineembed(spans))
    x = torch.tensor([-0.1, 0.0, 5e-4, 0.2, 0.9995, 1.0, 1.2], dtype=torch.float64)
    assert torch.equal(inverse_sigmoid(x), ref_inverse_sigmoid(x))


def test_forward_equals_the_official_model_with_shared_weights(qd_detr: QDDETR) -> None:
    """Item 21: T2V residual order, global token, DAB decoder (separate bbox_embed for the refinement, span_embed
    for the prediction), decoder memory = the clips without the global token; and the negative pairs' roll."""
    batch = _batch(0)
    with torch.no_grad():
        ref = ref_qd_detr(qd_detr, batch)
        ours = qd_detr(batch)
        qd_detr.train()  # dropout is 0: the training pass adds the mismatched saliency
        mismatched = qd_detr(batch)["saliency_mismatched"]
        qd_detr.eval()
    for key in ("logits", "spans", "saliency"):
        assert torch.allclose(ours[key], ref[key], atol=1e-9), key
    assert torch.allclose(mismatched, ref["saliency_neg"], atol=1e-9)


def test_refined_references_keep_their_gradient(qd_detr: QDDETR) -> None:
    """transformer.py:292-296: each later layer's reference enters its span with the gradient of bbox_embed."""
    qd_detr.zero_grad()
    out = qd_detr(_batch(1))
    out["spans"][1:].sum().backward()
    assert qd_detr.decoder.bbox_embed.layers[-1].weight.grad.abs().sum() > 0
    assert qd_detr.anchors.weight.grad.abs().sum() > 0
    qd_detr.zero_grad()


def test_initialisation_follows_the_official_one(qd_detr: QDDETR) -> None:
    """Global token and position N(0, 1) (model.py:87-88); Xavier on the transformer (transformer.py:101-104);
    the refinement MLP's last bias 0 (its zero weight is overwritten by the Xavier pass, transformer.py:93, 219)."""
    encoder, decoder = qd_detr.encoder, qd_detr.decoder
    assert 0.85 < encoder.global_token.std().item() < 1.15 and 0.85 < encoder.global_pos.std().item() < 1.15
    assert (decoder.bbox_embed.layers[-1].bias == 0).all()
    for module in (encoder, decoder):
        for name, p in module.named_parameters():
            if p.dim() > 1:
                assert p.abs().max() <= math.sqrt(6 / (p.shape[0] + p.shape[1])), name
    assert isinstance(encoder.layers[0].ffn.activation, torch.nn.PReLU)
    assert isinstance(decoder.layers[0].ffn.activation, torch.nn.PReLU)


def test_forward_is_invariant_to_padding(qd_detr: QDDETR) -> None:
    batch = _batch(2)
    padded = dict(batch)
    padded["visual"] = torch.cat([batch["visual"], torch.randn(3, 3, 10, dtype=torch.float64)], 1)
    padded["visual_mask"] = torch.cat([batch["visual_mask"], torch.zeros(3, 3, dtype=torch.bool)], 1)
    padded["text"] = torch.cat([batch["text"], torch.randn(3, 2, 6, dtype=torch.float64)], 1)
    padded["text_mask"] = torch.cat([batch["text_mask"], torch.zeros(3, 2, dtype=torch.bool)], 1)
    with torch.no_grad():
        ours, wider = qd_detr(batch), qd_detr(padded)
    assert torch.allclose(wider["logits"], ours["logits"], atol=1e-9)
    assert torch.allclose(wider["spans"], ours["spans"], atol=1e-9)
    valid = batch["visual_mask"]
    assert torch.allclose(wider["saliency"][:, :7][valid], ours["saliency"][valid], atol=1e-9)


# --- official saliency labels (qd_detr/start_end_dataset.py) -------------------------------------------------------
def ref_labels_all(rel_clip_ids: list[int], scores: list, ctx_l: int) -> np.ndarray:
    """start_end_dataset.py:190-204: the summed annotator score of each relevant clip, 0 elsewhere."""
    agg_scores = np.sum(np.array(scores), 1)
    score_array = np.zeros(ctx_l)
    for idx in range(len(rel_clip_ids)):
        score_array[rel_clip_ids[idx]] = agg_scores[idx]
    return score_array


def ref_sub_as_query(gt_window: list[float], ctx_l: int, clip_len: float) -> tuple[list[int], list[int], np.ndarray]:
    """start_end_dataset.py:124-142: the window's clip range, its positive pool and negative pool, the 0/1 array."""
    gt_st = int(gt_window[0] / clip_len)
    gt_ed = max(0, min(int(gt_window[1] / clip_len), ctx_l) - 1)
    gt_st = min(gt_st, gt_ed)
    score_array = np.zeros(ctx_l)
    score_array[gt_st : gt_ed + 1] = 1
    return list(range(gt_st, gt_ed + 1)), list(range(0, gt_st)) + list(range(gt_ed + 1, ctx_l)), score_array


def test_rank_labels_equal_the_official_ones() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        ctx_l = int(rng.integers(5, 40))
        ids = sorted(rng.choice(ctx_l, size=int(rng.integers(1, ctx_l)), replace=False).tolist())
        scores = rng.integers(0, 5, size=(len(ids), 3))
        rec = GroundingRecord(0, "q", "v", 2.0 * ctx_l, np.array([[0.0, 2.0]]), ids, scores)
        assert np.array_equal(saliency_labels(rec, ctx_l, 2.0).labels, ref_labels_all(ids, scores.tolist(), ctx_l))


WINDOWS = [([3.2, 9.9], 16, 1.0), ([0.0, 30.0], 15, 2.0), ([4, 5], 8, 2.0), ([0.5, 7.5], 8, 1.0)]


@pytest.mark.parametrize(("window", "ctx_l", "clip_len"), WINDOWS)
def test_window_labels_and_draws_follow_the_official_sampler(window, ctx_l: int, clip_len: float) -> None:
    """Item 19: 2 distinct clips inside the window and 2 distinct outside, as random.sample(k=2)."""
    rec = GroundingRecord(0, "q", "v", ctx_l * clip_len, np.array([window], dtype=float))
    labels = saliency_labels(rec, ctx_l, clip_len)
    inside, outside, score_array = ref_sub_as_query(window, ctx_l, clip_len)
    assert np.array_equal(labels.labels, score_array) and labels.hard_pos == NO_HARD_PAIR
    rng = np.random.default_rng(1)
    draws = [draw_saliency_pairs(labels.relevant, NO_HARD_PAIR, NO_HARD_PAIR, rng) for _ in range(400)]
    if len(inside) > 1:
        assert all(p[0] != p[1] for p, _ in draws) and {c for p, _ in draws for c in p} == set(inside)
    else:
        assert all(p == [inside[0]] * 2 for p, _ in draws)  # start_end_dataset.py:133
    if len(outside) > 1:
        assert all(n[0] != n[1] for _, n in draws) and {c for _, n in draws for c in n} == set(outside)
    else:  # random.sample fails here (:136); the positives stand in, as CG-DETR's fallback (test_cg_detr.py)
        assert all(n == p for p, n in draws)
