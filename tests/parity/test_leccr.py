"""LECCR against references written from the official code, ``LiJiaBei-7/leccr`` (files under ``LECCR/``; cited as
``path:line``, read at the repository's HEAD 6741e65).

The references below are our own transcriptions of the official formulas (sequence-first tensors as upstream,
``F.normalize`` with its default dim, the X-VLM ``AllGather``); they run on the weights of our modules, in float64 with
dropout off, and must agree with ours to 1e-6 (values and gradients): every loss term, the slot cross-attention stack,
the slot-visual interaction, the video encoder, whole training steps (image and video), padding invariance, the
schedule's lr sequence, ``pre_caption``, the tokenisation lengths and the gradient through the cross-rank gather.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import random
import re
import socket
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from leccr_lightning.callbacks.schedules import WarmupSchedule
from leccr_lightning.data.text import TokenizedTexts, leccr_pre_caption, normalize_caption, train_wordpiece
from leccr_lightning.losses import slot_diversity
from leccr_lightning.losses.slots import (
    english_guided_soft_matching,
    max_over_slots,
    slot_text_matching,
    slot_vision_alignment,
    slot_vision_summary,
)
from leccr_lightning.methods.leccr import LECCR
from leccr_lightning.methods.objectives import MethodTemperatureInfoNCE
from leccr_lightning.modules.slots import CrossAttentionLayer, FrameSelfAttention
from tests.helpers import pair_context

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which attention.py:32-33 keeps
TOL = {"rtol": 1e-6, "atol": 1e-9}


# --- references, written from the official code ---------------------------------------------------------------------
def ref_attention_layer(layer: CrossAttentionLayer, tgt, memory, key_padding_mask=None):
    """CrossAttentionLayer.forward without positions (attention.py:41-59), sequence-first [L, B, d]:
    out = norm2(tgt + dropout2(linear2(dropout(gelu(linear1(MHA(tgt, memory, memory))))))); norm1 is unused.
    With memory = tgt it is SelfAttentionLayer.forward (attention.py:104-114)."""
    mha = layer.attention
    attended, _ = F.multi_head_attention_forward(
        tgt,
        memory,
        memory,
        mha.embed_dim,
        mha.num_heads,
        mha.in_proj_weight,
        mha.in_proj_bias,
        None,
        None,
        False,
        0.0,
        mha.out_proj.weight,
        mha.out_proj.bias,
        training=False,
        key_padding_mask=key_padding_mask,
        need_weights=False,
    )
    hidden = F.gelu(F.linear(attended, layer.linear1.weight, layer.linear1.bias))
    update = F.linear(hidden, layer.linear2.weight, layer.linear2.bias)
    return F.layer_norm(tgt + update, (tgt.shape[-1],), layer.norm.weight, layer.norm.bias, LAYER_NORM_EPS)


def ref_cross_attention(layers, tgt, memory, key_padding_mask=None):
    """CrossAttention.forward (attention.py:67-83): the layers in turn over the same memory."""
    for layer in layers:
        tgt = ref_attention_layer(layer, tgt, memory, key_padding_mask)
    return tgt


def ref_self_attention(layers, src, key_padding_mask=None):
    """SelfAttention.forward (attention.py:122-128)."""
    for layer in layers:
        src = ref_attention_layer(layer, src, src, key_padding_mask)
    return src


def ref_interaction_with_caption(model: LECCR, image_embeds, caption_embeds, key_padding_mask, video_mask=None):
    """interaction_with_caption (model_retrieval_caption.py:76-84; video: video_model_retrieval_caption.py:99-110):
    queries [n, 1, d] expanded over the batch attend to caption_proj(Z); the image tokens attend to the slots (no
    mask); the slots attend to the image tokens (video: padded frames masked). Returns (X', S', S0), seq-first."""
    batch = image_embeds.shape[0]
    queries = model.slots.queries.unsqueeze(1).expand(-1, batch, -1)
    caption = model.description_proj(caption_embeds)
    slots = ref_cross_attention(model.slots.attend.layers, queries, caption.transpose(0, 1), key_padding_mask)
    image = image_embeds.transpose(0, 1)
    after_image = ref_cross_attention(model.interaction.visual_to_slots.layers, image, slots, None)
    after_caption = ref_cross_attention(model.interaction.slots_to_visual.layers, slots, image, video_mask)
    return after_image, after_caption, slots


def ref_contrastive_loss(image_feat, text_feat, idx, temp):
    """get_contrastive_loss with idx on one process (xvlm.py:260-292): multi-positive labels pos / pos.sum(1)."""
    logits = image_feat @ text_feat.t() / temp
    idx = idx.view(-1, 1)
    pos_idx = torch.eq(idx, idx.t()).to(logits.dtype)
    labels = pos_idx / pos_idx.sum(1, keepdim=True)
    loss_i2t = -torch.sum(F.log_softmax(logits, dim=1) * labels, dim=1).mean()
    loss_t2i = -torch.sum(F.log_softmax(logits.t(), dim=1) * labels, dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


def ref_caption_contrastive_loss(caption_embeds, text_feats, temp):
    """get_caption_contrastive_loss (model_retrieval_caption.py:145-152): caption_embeds [n, B, d]."""
    n, bsz, d = caption_embeds.shape
    sim = caption_embeds.reshape(-1, d) @ text_feats.transpose(0, 1)
    logits = torch.max(sim.reshape(n, bsz, bsz), dim=0)[0] / temp
    labels = torch.arange(bsz)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def ref_caption_vision_loss(model: LECCR, caption, image, idx, corrected=False, image_mask=None):
    """caption_vision_loss (model_retrieval_caption.py:118-143; video without the gathers:
    video_model_retrieval_caption.py:144-169): caption = S0 [n, B, d] seq-first, image = X [B, T, d].

    Upstream ``F.normalize`` keeps its default dim=1 and the means run over every token position. ``corrected``:
    unit vectors (dim=-1) and the mean over the valid tokens of ``image_mask`` (our default)."""
    caption = caption.transpose(0, 1)
    dim = -1 if corrected else 1
    caption = F.normalize(model.slot_proj(caption), dim=dim)
    image = model.token_proj(image)
    if corrected and image_mask is not None:
        image = image * image_mask.unsqueeze(-1)
    image = F.normalize(image, dim=dim)
    bsz, vn, d = image.shape
    _, cn, _ = caption.shape
    sim = (caption.reshape(-1, d) @ image.reshape(-1, d).t()).reshape(bsz, cn, bsz, vn).transpose(1, 2)
    if corrected and image_mask is not None:
        weights = image_mask.to(sim.dtype)[None, :, None, :]
        sim = (sim * weights).sum(-1) / weights.sum(-1)
    else:
        sim = torch.mean(sim, dim=-1)
    sim = torch.mean(sim, dim=-1)
    idx = idx.view(-1, 1)
    pos_idx = torch.eq(idx, idx.t()).to(sim.dtype)
    labels = pos_idx / pos_idx.sum(1, keepdim=True)
    return -torch.sum(F.log_softmax(sim, dim=1) * labels, dim=1).mean()


def ref_caption_regularization(caption_embeds):
    """caption_regularization (model_retrieval_caption.py:65-73): caption_embeds [n, B, d]."""
    n, bsz = caption_embeds.shape[:2]
    caption_embeds = F.normalize(caption_embeds, p=2, dim=-1)
    diagonal = torch.eye(n, dtype=caption_embeds.dtype).unsqueeze(0).repeat(bsz, 1, 1)
    caption_embeds = caption_embeds.transpose(0, 1)
    sim = caption_embeds @ caption_embeds.transpose(1, -1)
    return (sim - diagonal).mean()


def ref_norm_score(score):
    """norm_score (model_retrieval_caption.py:87-90)."""
    score = score - torch.min(score)
    return score / torch.max(score)


def ref_dstl_loss(image_feat, caption_embeds, text_s, text_t, alpha=0.8, corrected=False):
    """dstl_loss (model_retrieval_caption.py:94-116) on one process: caption_embeds [n, B, d] (not normalised).
    Upstream adds logits_sc [image, text] to logits_sv [text, image]; ``corrected`` transposes logits_sc first."""
    logits_tv = text_t @ image_feat.t()
    logits_sv = text_s @ image_feat.t()
    n, bsz, d = caption_embeds.shape
    sim = caption_embeds.reshape(-1, d) @ text_s.transpose(0, 1)
    logits_sc = torch.max(sim.reshape(n, bsz, bsz), dim=0)[0]
    if corrected:
        logits_sc = logits_sc.t()
    labels = F.softmax(alpha * ref_norm_score(logits_sv) + (1.0 - alpha) * ref_norm_score(logits_sc), 1)
    return F.kl_div(F.log_softmax(logits_tv, 1), labels.detach(), reduction="batchmean")


def ref_text_feat(model: LECCR, tokens):
    """get_text_embeds + get_features(text) (xvlm.py:237-245): norm(text_proj(last_hidden_state[:, 0]))."""
    states = model.text.backbone(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return F.normalize(model.text_head(states.last_hidden_state[:, 0, :]), dim=-1)


def ref_training_losses(model: LECCR, batch, video: bool, corrected: bool = False) -> dict:
    """RetrievalModel.forward (image: model_retrieval_caption.py:154-199; video: video_model_retrieval_caption.py:
    180-227) on one process, returning its raw terms and the total of image_Retrieval_caption.py:63-64."""
    hp = model.hparams
    idx = batch["visual_index"]
    if video:
        padding = ~batch["visual_mask"]
        ori_image_embeds = ref_self_attention(model.visual.layers, batch["visual"].transpose(0, 1), padding)
        ori_image_embeds = ori_image_embeds.transpose(0, 1)
        video_mask = padding
    else:
        ori_image_embeds, video_mask = batch["visual"], None
    with torch.no_grad():
        description = batch["text"]["description"]
        caption_embeds = model.text.backbone(
            input_ids=description["input_ids"], attention_mask=description["attention_mask"]
        ).last_hidden_state
    key_padding_mask = ~description["attention_mask"].bool()
    image_embeds, caption_embeds, ori_caption_embeds = ref_interaction_with_caption(
        model, ori_image_embeds, caption_embeds, key_padding_mask, video_mask
    )
    image_embeds = image_embeds.transpose(0, 1)
    mask = batch["visual_mask"] if video else None
    loss_cv = ref_caption_vision_loss(model, ori_caption_embeds, ori_image_embeds, idx, corrected, mask)
    loss_reg = ref_caption_regularization(ori_caption_embeds)
    if video:  # get_features(vis_pooling='mean', vis_mask) (xvlm_video.py:268-271)
        weights = batch["visual_mask"].unsqueeze(-1).to(image_embeds.dtype)
        pooled = torch.sum(image_embeds * weights, dim=1) / torch.sum(weights, dim=1)
    else:  # get_features(vis_pooling='cls') (xvlm.py:247-248)
        pooled = image_embeds[:, 0, :]
    image_feat = F.normalize(model.visual_head(pooled), dim=-1)
    text_s = ref_text_feat(model, batch["text"]["source"])
    text_t = ref_text_feat(model, batch["text"]["target"])
    temp = model.temperature
    terms = {
        "vs": ref_contrastive_loss(image_feat, text_s, idx, temp),
        "vt": ref_contrastive_loss(image_feat, text_t, idx, temp),
        "st": ref_contrastive_loss(text_s, text_t, idx, temp),
        "slot_vision": loss_cv,
        "slot_diversity": loss_reg,
    }
    slot_embeds = model.slot_head(caption_embeds)
    terms["slot_text"] = ref_caption_contrastive_loss(slot_embeds, text_s, temp) + ref_caption_contrastive_loss(
        slot_embeds, text_t, temp
    )
    terms["dstl"] = ref_dstl_loss(image_feat, slot_embeds, text_s, text_t, hp.dstl_alpha, corrected)
    w_d = hp.dstl_weight
    terms["loss"] = (
        (terms["vs"] + terms["slot_vision"] * hp.slot_vision_weight)
        + (terms["vt"] * (1 - w_d) + terms["dstl"] * w_d)
        + terms["st"]
        + terms["slot_text"] * hp.slot_text_weight
        + terms["slot_diversity"] * hp.diversity_weight
    )
    return terms


class RefAllGather(torch.autograd.Function):
    """The X-VLM AllGather (xvlm.py:50-67): concatenation over ranks; the backward returns the local slice only."""

    @staticmethod
    def forward(ctx, tensor):
        output = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(output, tensor.contiguous())
        ctx.rank, ctx.batch_size = dist.get_rank(), tensor.shape[0]
        return torch.cat(output, 0)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output[ctx.batch_size * ctx.rank : ctx.batch_size * (ctx.rank + 1)]


def ref_pre_caption(caption: str, max_words: int) -> str:
    """pre_caption (dataset/utils.py:31-55), step by step."""
    raw = caption
    caption = re.sub(r"([,.'!?\"()*#:;~])", " ", caption.lower())
    caption = caption.replace("-", " ").replace("/", " ").replace("<person>", "person")
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n")
    caption = caption.strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    if not len(caption):
        raise ValueError(f"pre_caption yields invalid text (raw: {raw})")
    return caption


def ref_lr_lambda(step: int, warmup: int, total: int) -> float:
    """create_scheduler's linear lambda (scheduler.py:14-21)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


# --- fixtures ----------------------------------------------------------------------------------------------------
VOCAB, WIDTH = 40, 16


def parity_model(video: bool, corrected: bool = False, **overrides) -> LECCR:
    """A float64 LECCR at the official structure (no input projection: the slot width is the feature width)."""
    torch.manual_seed(0)
    args = dict(
        visual_dim=WIDTH,
        vocab_size=VOCAB,
        text_hidden=12,
        text_layers=1,
        text_heads=2,
        text_pooling="cls",
        embed_dim=8,
        num_slots=2 if video else 3,
        slot_layers=2,
        interaction_layers=2,
        attention_heads=4,
        slot_vision_weight=0.3,
        slot_text_weight=0.2,
        dstl_weight=0.4,
        diversity_weight=0.1,
        parity_dstl_orientation=not corrected,
        parity_slot_vision_norm=not corrected,
        parity_slot_vision_padding=not corrected,
    )
    if video:
        args.update(visual_encoder="self_attention", visual_pooling="mean", slot_vision_gather=False)
    model = LECCR(**{**args, **overrides}).double().eval()
    with torch.no_grad():  # non-zero slot queries, so that the slots differ without dropout
        model.slots.queries.normal_(0.0, 0.5)
    return model


def tokens(batch: int, length: int, seed: int, short_rows: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:short_rows, length - 3 :] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def parity_batch(index: list[int], frames: int, padded: bool) -> dict:
    batch = len(index)
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    if padded:
        mask[0, 2:] = False
        mask[2, 4:] = False
    return {
        "visual": torch.randn(batch, frames, WIDTH, generator=generator, dtype=torch.float64),
        "visual_mask": mask,
        "visual_index": torch.tensor(index),
        "text": {"source": tokens(batch, 7, 2), "target": tokens(batch, 9, 3), "description": tokens(batch, 11, 4)},
    }


def grads_of(model: LECCR, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def assert_same_grads(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for name, grad in ours.items():
        if reference[name] is None:
            assert grad is None or torch.count_nonzero(grad) == 0, name
        else:
            assert grad is not None, name
            torch.testing.assert_close(grad, reference[name], **TOL, msg=name)


# --- every loss term and its gradients --------------------------------------------------------------------------
def random_unit(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1).requires_grad_()


INDEX = torch.tensor([0, 1, 0, 2, 3, 2])


def test_multi_positive_infonce_of_the_three_pairs_matches_get_contrastive_loss():
    visual, text = random_unit(6, 5, seed=0), random_unit(6, 5, seed=1)
    temp = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    positives = INDEX[:, None] == INDEX[None, :]
    # ours scores [texts, visuals]; upstream [images, texts] (symmetric loss)
    ours = MethodTemperatureInfoNCE()(pair_context(text @ visual.T, positives, temperature=temp))
    reference = ref_contrastive_loss(visual, text, INDEX, temp)
    torch.testing.assert_close(ours, reference, **TOL)
    ours_grads = torch.autograd.grad(ours, (visual, text, temp))
    reference_grads = torch.autograd.grad(reference, (visual, text, temp))
    for a, b in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_slot_text_matching_matches_get_caption_contrastive_loss():
    slots, text = random_unit(6, 3, 5, seed=2), random_unit(6, 5, seed=3)
    temp = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    ours = slot_text_matching(slots, text, temp)
    reference = ref_caption_contrastive_loss(slots.transpose(0, 1), text, temp)
    torch.testing.assert_close(ours, reference, **TOL)
    for a, b in zip(
        torch.autograd.grad(ours, (slots, text, temp)), torch.autograd.grad(reference, (slots, text, temp)), strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)


def test_slot_diversity_matches_caption_regularization():
    slots = random_unit(6, 4, 5, seed=4)
    ours, reference = slot_diversity(slots), ref_caption_regularization(slots.transpose(0, 1))
    torch.testing.assert_close(ours, reference, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, slots)[0], torch.autograd.grad(reference, slots)[0], **TOL)


@pytest.mark.parametrize("corrected", [False, True], ids=["official", "corrected"])
def test_english_guided_soft_matching_matches_dstl_loss(corrected):
    visual, source, target = random_unit(6, 5, seed=5), random_unit(6, 5, seed=6), random_unit(6, 5, seed=7)
    slots = torch.randn(6, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8)).requires_grad_()
    slot_scores = max_over_slots(slots, source)  # [visual, text]
    ours = english_guided_soft_matching(
        source @ visual.T, slot_scores.T if corrected else slot_scores, target @ visual.T, alpha=0.8
    )
    reference = ref_dstl_loss(visual, slots.transpose(0, 1), source, target, 0.8, corrected)
    torch.testing.assert_close(ours, reference, **TOL)
    inputs = (visual, source, target, slots)
    ours_grads = torch.autograd.grad(ours, inputs, allow_unused=True)
    reference_grads = torch.autograd.grad(reference, inputs, allow_unused=True)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("corrected", [False, True], ids=["official", "corrected"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_slot_vision_alignment_matches_caption_vision_loss(corrected, padded):
    model = parity_model(video=False)
    generator = torch.Generator().manual_seed(9)
    slots = torch.randn(6, 3, WIDTH, generator=generator, dtype=torch.float64).requires_grad_()
    visual = torch.randn(6, 5, WIDTH, generator=generator, dtype=torch.float64).requires_grad_()
    mask = torch.ones(6, 5, dtype=torch.bool)
    if padded:
        mask[1, 3:] = False
    norm = "vector" if corrected else "across"
    ours = slot_vision_alignment(
        slot_vision_summary(model.slot_proj(slots), None, norm),
        slot_vision_summary(model.token_proj(visual), mask if corrected else None, norm),
        INDEX[:, None] == INDEX[None, :],
    )
    reference = ref_caption_vision_loss(model, slots.transpose(0, 1), visual, INDEX, corrected, mask)
    torch.testing.assert_close(ours, reference, **TOL)
    inputs = (slots, visual, *model.slot_proj.parameters(), *model.token_proj.parameters())
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(reference, inputs), strict=True):
        torch.testing.assert_close(a, b, **TOL)


# --- modules with shared weights --------------------------------------------------------------------------------
def test_cross_attention_layer_matches_the_official_layer():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(WIDTH, num_heads=4, dropout=0.1).double().eval()
    x = torch.randn(3, 5, WIDTH, dtype=torch.float64)
    memory = torch.randn(3, 7, WIDTH, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    expected = ref_attention_layer(layer, x.transpose(0, 1), memory.transpose(0, 1), ~mask).transpose(0, 1)
    torch.testing.assert_close(layer(x, memory, mask), expected, **TOL)


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_slot_stack_and_interaction_match_interaction_with_caption(video):
    model = parity_model(video)
    batch = parity_batch([0, 1, 2, 3], frames=6, padded=video)
    visual = model.encode_visual(batch)
    with torch.no_grad():
        description = batch["text"]["description"]
        states = model.text.backbone(**description).last_hidden_state
    tokens_ = visual["tokens"]
    after_image, after_caption, slots = ref_interaction_with_caption(
        model,
        tokens_,
        states,
        ~description["attention_mask"].bool(),
        ~batch["visual_mask"] if video else None,
    )
    torch.testing.assert_close(visual["slots"], slots.transpose(0, 1), **TOL)
    torch.testing.assert_close(visual["local"], model.slot_head(after_caption).transpose(0, 1), **TOL)
    enhanced, _ = model.interaction(tokens_, visual["mask"], visual["slots"])
    torch.testing.assert_close(enhanced, after_image.transpose(0, 1), **TOL)


def test_video_encoder_matches_the_official_self_attention():
    torch.manual_seed(0)
    encoder = FrameSelfAttention(WIDTH, num_heads=4, num_layers=2).double().eval()
    frames = torch.randn(3, 6, WIDTH, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2:] = False
    out = encoder(frames, mask)
    expected = ref_self_attention(encoder.layers, frames.transpose(0, 1), ~mask).transpose(0, 1)
    torch.testing.assert_close(out.tokens, expected, **TOL)
    weights = mask.unsqueeze(-1).double()
    torch.testing.assert_close(out.pooled, (expected * weights).sum(1) / weights.sum(1), **TOL)
    assert torch.equal(out.mask, mask)


def test_video_encoder_has_no_feedforward_wider_than_the_frames_and_no_positions():
    encoder = FrameSelfAttention(WIDTH, num_heads=4)
    names = {name for name, _ in encoder.named_parameters()}
    assert len(encoder.layers) == 1  # vision_layer: 1 (Retrieval_msrvtt.yaml:37)
    assert all(p.shape[-1] == WIDTH for name, p in encoder.named_parameters() if name.endswith("weight"))
    assert not any("position" in name or "norm1" in name for name in names)


# --- whole training steps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("corrected", [False, True], ids=["official", "corrected"])
@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_training_step_terms_and_gradients_match_the_official_forward(video, corrected):
    model = parity_model(video, corrected)
    batch = parity_batch([0, 1, 0, 2, 3], frames=6, padded=video)
    ours = model.compute_losses(batch)
    reference = ref_training_losses(model, batch, video, corrected)
    for term, value in reference.items():
        torch.testing.assert_close(ours[term], value, **TOL, msg=term)
    ours_grads = grads_of(model, model.compute_losses(batch)["loss"])
    reference_grads = grads_of(model, ref_training_losses(model, batch, video, corrected)["loss"])
    assert_same_grads(ours_grads, reference_grads)
    assert ours_grads["temperature"] is not None and ours_grads["slots.queries"] is not None


def test_the_official_dstl_orientation_differs_from_the_corrected_one():
    batch = parity_batch([0, 1, 2, 3, 4], frames=3, padded=False)
    official = ref_training_losses(parity_model(False), batch, False)["dstl"]
    corrected = ref_training_losses(parity_model(False, corrected=True), batch, False, corrected=True)["dstl"]
    assert not torch.allclose(official, corrected)


# --- padding invariance ---------------------------------------------------------------------------------------
def repad(batch: dict, extra_frames: int, extra_tokens: int, fill: float) -> dict:
    """The same items with longer padding, padded positions filled with garbage."""
    visual = F.pad(batch["visual"], (0, 0, 0, extra_frames), value=fill)
    visual[~F.pad(batch["visual_mask"], (0, extra_frames), value=False)] = fill
    text = {}
    for role, t in batch["text"].items():
        mask = F.pad(t["attention_mask"], (0, extra_tokens))
        ids = F.pad(t["input_ids"], (0, extra_tokens), value=7)
        text[role] = {"input_ids": torch.where(mask.bool(), ids, 7), "attention_mask": mask}
    return {
        **batch,
        "visual": visual,
        "visual_mask": F.pad(batch["visual_mask"], (0, extra_frames), value=False),
        "text": text,
    }


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_corrected_losses_and_embeddings_ignore_padding(video):
    model = parity_model(video, corrected=True)
    batch = parity_batch([0, 1, 0, 2, 3], frames=6, padded=video)
    longer = repad(batch, extra_frames=3 if video else 0, extra_tokens=4, fill=30.0)
    a, b = model.compute_losses(batch), model.compute_losses(longer)
    for term in ("vs", "vt", "st", "slot_text", "slot_vision", "slot_diversity", "dstl", "loss"):
        torch.testing.assert_close(a[term], b[term], **TOL, msg=term)
    views_a, views_b = model.encode_gallery(batch), model.encode_gallery(longer)
    torch.testing.assert_close(views_a["gallery"], views_b["gallery"], **TOL)


def test_the_official_video_slot_vision_term_depends_on_padding():
    """Upstream averages the padded frames too (difference 3): longer padding changes L_cv, nothing else."""
    model = parity_model(video=True)
    batch = parity_batch([0, 1, 0, 2, 3], frames=6, padded=True)
    a, b = model.compute_losses(batch), model.compute_losses(repad(batch, 3, 0, 0.0))
    torch.testing.assert_close(a["vs"], b["vs"], **TOL)
    assert not torch.allclose(a["slot_vision"], b["slot_vision"])
    reference = ref_training_losses(model, repad(batch, 3, 0, 0.0), video=True)["slot_vision"]
    torch.testing.assert_close(b["slot_vision"], reference, **TOL)


# --- schedule -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [10, 37, 1133])
def test_warmup_schedule_gives_the_official_lr_sequence(total):
    base = 1e-5
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = WarmupSchedule(optimizer, warmup_fraction=0.1, num_training_steps=total)
    warmup = int(total * 0.1)  # scheduler.py:9-11
    seen = []
    for _ in range(total + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [base * ref_lr_lambda(step, warmup, total) for step in range(total + 1)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert seen[0] == 0.0 and seen[-1] == 0.0


# --- text --------------------------------------------------------------------------------------------------------
TRICKY = [
    "A man, in a red-shirt / jeans, is (happily) jumping!",
    "  Two  dogs\tplay\t\tin the   snow.\n",
    '<PERSON> rides a bike; <person>\'s friend waits: ~ok~ #1 *star* "quote"',
    "Ein Mann fährt Fahrrad – schön?",
    "一个人\u3000在\u3000\u3000公园里跑步。",
    "word " * 40,
    "tab\tseparated words count as one\tword",
    "trailing spaces and a newline \n",
]


def random_caption(rng: random.Random) -> str:
    alphabet = "ab cD-/.,'!?\"()*#:;~\t\n\u3000<person>é中"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) + "x"


def test_leccr_policy_is_pre_caption():
    rng = random.Random(0)
    for caption in TRICKY + [random_caption(rng) for _ in range(500)]:
        for max_words in (30, 3):
            assert leccr_pre_caption(caption, max_words) == ref_pre_caption(caption, max_words), caption
        assert normalize_caption(caption, "leccr", "target") == ref_pre_caption(caption, 30)
        assert normalize_caption(caption, "leccr", "description") == caption  # descriptions stay raw (:77)
    for empty in (" ... ", "?!", "-/-"):
        with pytest.raises(ValueError):
            ref_pre_caption(empty, 30)
        with pytest.raises(ValueError, match="no text"):
            leccr_pre_caption(empty)


def test_tokenized_lengths_follow_the_official_tokenizer_calls():
    """Training: tokenizer(texts, padding='longest', max_length=200) does not truncate; evaluation:
    padding='max_length', truncation=True, max_length=200 (image_Retrieval_caption.py:47,58,105,132)."""
    words = [f"w{i}" for i in range(50)]
    texts = [" ".join(words[j % 50] for j in range(10 + 37 * i)) for i in range(6)]  # up to 195 words
    tokenizer = train_wordpiece(texts, vocab_size=30)
    train_call = tokenizer(texts, padding="longest", max_length=200)
    eval_call = tokenizer(texts, padding="max_length", truncation=True, max_length=200)
    assert max(sum(m) for m in train_call["attention_mask"]) > 200  # the paragraphs are longer than 200 tokens
    for ours, official in (
        (TokenizedTexts(tokenizer, texts, None), train_call),
        (TokenizedTexts(tokenizer, texts, 200), eval_call),
    ):
        batch = ours.batch(list(range(len(texts))))
        for row, (ids, mask) in enumerate(zip(official["input_ids"], official["attention_mask"], strict=True)):
            kept = [t for t, m in zip(ids, mask, strict=True) if m]
            assert batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist() == kept


# --- gradient through the cross-rank gather (2 gloo processes) ------------------------------------------------------
WORLD = 2
GATHER_INDEX = [0, 1, 2, 0, 3, 2, 4, 1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_grads(rank: int, official: bool, parity: bool, video: bool) -> dict[str, np.ndarray]:
    """DDP-averaged gradients of one step on this rank's half of the batch."""
    model = parity_model(video, gather_negatives=True, parity_gather_gradient=parity)
    if official:
        model.gather = RefAllGather.apply
    batch = parity_batch(GATHER_INDEX, frames=4, padded=False)
    rows = slice(rank * 4, (rank + 1) * 4)
    local = {
        **{k: batch[k][rows] for k in ("visual", "visual_mask", "visual_index")},
        "text": {r: {k: v[rows] for k, v in t.items()} for r, t in batch["text"].items()},
    }
    model.compute_losses(local)["loss"].backward()
    grads = {}
    for name, p in model.named_parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        dist.all_reduce(grad)
        grads[name] = (grad / WORLD).numpy()
    return grads


def _gather_worker(rank: int, port: int, video: bool, results) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        out = {
            "official": _rank_grads(rank, official=True, parity=False, video=video),
            "parity": _rank_grads(rank, official=False, parity=True, video=video),
            "default": _rank_grads(rank, official=False, parity=False, video=video),
        }
        results.put((rank, out))
        dist.destroy_process_group()
    except Exception:  # the parent reports the child's traceback instead of timing out
        results.put((rank, traceback.format_exc()))


@pytest.mark.ddp
@pytest.mark.timeout(240)
@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_parity_gather_gradient_reproduces_the_xvlm_allgather_under_ddp(video):
    context = mp.get_context("fork")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_gather_worker, args=(r, port, video, results)) for r in range(WORLD)]
    for process in processes:
        process.start()
    try:
        received = dict(results.get(timeout=200) for _ in range(WORLD))
    except queue.Empty:
        pytest.fail("a gloo worker did not report within 200 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    for rank, item in received.items():
        assert isinstance(item, dict), f"worker {rank} failed:\n{item}"
    grads = received[0]
    differs = False
    for name, official in grads["official"].items():
        np.testing.assert_allclose(grads["parity"][name], official, rtol=1e-6, atol=1e-10, err_msg=name)
        differs |= not np.allclose(grads["default"][name], official, rtol=1e-6, atol=1e-10)
    assert differs, "the full-batch gradient should differ from the official one on 2 ranks"
    assert math.isfinite(float(np.abs(grads["parity"]["temperature"]).sum()))
