"""Parity with LiJiaBei-7/rivrl (f6078e4): references of the official formulas written from the official code (cited
as ``file:line``), against our modules and losses with shared weights, float64, on random inputs with padding.

Covered: PaA (PaA.py:27-94), the video encoder (model.py:53-63, 158-211), the multi-level text encoder
(model.py:272-307), the hybrid heads (model.py:326-348), the soft-Jaccard triplet (loss.py:65-153), the whole hybrid
loss with its batch-size BCE scaling (model.py:592-621), and the 0.6 / 0.4 min-max fusion with the video metrics
(validate.py:7-11, tester.py:159-171, evaluation.py:17-72, util/metrics.py:60-157). Our padding-corrected default
matches where upstream is independent of padding (a batch of equal lengths, or one item alone);
``upstream_padding=True`` matches everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.losses.hybrid_space import soft_jaccard
from leccr_lightning.methods.objectives import TripletObjective
from leccr_lightning.methods.rivrl import RIVRL
from leccr_lightning.metrics.ranking import retrieval_report_from_views
from leccr_lightning.modules.dual_encoding import MultiLevelTextEncoder
from leccr_lightning.modules.rivrl import PreviewAwareAttention, PreviewIntensiveEncoder
from tests.helpers import pair_context

TOL = dict(rtol=1e-6, atol=1e-6)


# --- references written from the official code ---------------------------------------------------------------------
def ref_paa(paa: PreviewAwareAttention, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PaA.py:27-52 (Previewing_aware_Attention, --pooling max) then PaA.py:66-77 (PositionwiseFeedForward)."""
    residual = F.max_pool1d(x.permute(0, 2, 1), x.size(1)).squeeze(2)
    q = y @ paa.query.weight.T
    k = x @ paa.key.weight.T
    v = x @ paa.value.weight.T
    attention_mask = (1.0 - mask.unsqueeze(1)) * -10000.0
    dist = torch.bmm(q, k.transpose(1, 2)) * (1 / math.sqrt(paa.key.weight.shape[0]))
    probs = torch.softmax(dist + attention_mask, dim=-1)
    att = torch.bmm(probs, v).squeeze(1)
    att = F.layer_norm(
        att @ paa.output.weight.T + paa.output.bias + residual, att.shape[1:], paa.norm.weight, paa.norm.bias, 1e-6
    )
    hidden = F.relu(att @ paa.ffn_in.weight.T + paa.ffn_in.bias) @ paa.ffn_out.weight.T + paa.ffn_out.bias
    return F.layer_norm(hidden + att, att.shape[1:], paa.ffn_norm.weight, paa.ffn_norm.bias, 1e-6)


def ref_get_mask(kernel: int, stride: int, lengths: list[int], mask: torch.Tensor) -> torch.Tensor:
    """model.py:53-63: valid counts with float division truncated toward zero."""
    num = ((torch.tensor(lengths) - kernel) / stride).int() + 1
    conv_len = math.floor((mask.size(1) - kernel) / stride) + 1
    out = torch.zeros(mask.size(0), conv_len, dtype=mask.dtype)
    for i in range(mask.size(0)):
        out[i, : num[i]] = 1.0
    return out


def ref_video(encoder: PreviewIntensiveEncoder, videos: torch.Tensor, lengths: list[int]):
    """model.py:158-197 in eval mode (no dropout): unpacked preview biGRU, mean over the first lengths[i] steps,
    masked ReLU frame path, Conv2d clip path (never re-masked), PaA on both with the get_mask clip mask."""
    mask = (torch.arange(videos.shape[1])[None, :] < torch.tensor(lengths)[:, None]).to(videos.dtype)
    gru_init_out, _ = encoder.preview_rnn(videos)
    preview = torch.stack([gru_init_out[i, : lengths[i]].mean(0) for i in range(len(lengths))])
    con_input = F.relu(encoder.frame_fc(videos))
    con_input_mask = con_input * mask.unsqueeze(2).expand(-1, -1, con_input.size(2))
    outs = [ref_paa(encoder.paa, mask, con_input_mask, preview.unsqueeze(1))]
    for conv, kernel, stride in zip(encoder.clip_convs, encoder.clip_kernels, encoder.clip_strides, strict=True):
        weight = conv.weight.permute(0, 2, 1).unsqueeze(1)  # Conv2d(1, n, (k, 2048)) weight layout
        clips = F.relu(F.conv2d(con_input_mask.unsqueeze(1), weight, conv.bias, stride=stride)).squeeze(3)
        clips = clips.permute(0, 2, 1)
        outs.append(ref_paa(encoder.paa, ref_get_mask(kernel, stride, lengths, mask), clips, preview.unsqueeze(1)))
    return preview, torch.cat(outs, 1)


def ref_text(
    encoder: MultiLevelTextEncoder,
    ids: torch.Tensor,
    lengths: list[int],
    bows: torch.Tensor,
    bert: torch.Tensor | None = None,
) -> torch.Tensor:
    """model.py:272-307 in eval mode: packed biGRU (captions sorted by length, as collate_text does), mean over the
    first lengths[i] states, Conv2d windows with padding (w - 1) // 2 over the padded states, max over all
    positions, concatenated as [gru, cnn, bow, bert]."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(encoder.embed(ids), lengths, batch_first=True)
    padded = torch.nn.utils.rnn.pad_packed_sequence(encoder.rnn(packed)[0], batch_first=True)[0]
    gru_out = torch.stack([padded[i, : lengths[i]].mean(0) for i in range(len(lengths))])
    con_out = []
    for conv, width in zip(encoder.convs, encoder.kernel_sizes, strict=True):
        weight = conv.weight.permute(0, 2, 1).unsqueeze(1)
        out = F.relu(F.conv2d(padded.unsqueeze(1), weight, conv.bias, padding=((width - 1) // 2, 0))).squeeze(3)
        con_out.append(F.max_pool1d(out, out.size(2)).squeeze(2))
    parts = [gru_out, torch.cat(con_out, 1), bows] + ([bert] if bert is not None else [])
    return torch.cat(parts, 1)


def ref_hybrid_mapping(head, features: torch.Tensor):
    """model.py:337-348 (MFC: fc1 -> bn -> dropout, then l2norm; tag_fc -> bn -> sigmoid)."""
    concept = torch.sigmoid(head.concept_norm(head.concept(features)))
    latent = head.dropout(head.latent_norm(head.latent(features)))
    return latent / latent.pow(2).sum(1, keepdim=True).sqrt(), concept


def ref_jaccard_sim(im: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """loss.py:65-73."""
    im_e = im.unsqueeze(1).expand(-1, s.size(0), -1)
    s_e = s.unsqueeze(0).expand(im.size(0), -1, -1)
    return torch.min(im_e, s_e).sum(-1) / torch.max(im_e, s_e).sum(-1)


def ref_triplet(s: torch.Tensor, im: torch.Tensor, margin: float, measure: str) -> torch.Tensor:
    """loss.py:112-153 with max_violation, cost_style sum, direction all."""
    scores = ref_jaccard_sim(im, s) if measure == "jaccard" else im.mm(s.t())
    diagonal = scores.diag().view(im.size(0), 1)
    d1, d2 = diagonal.expand_as(scores), diagonal.t().expand_as(scores)
    eye = torch.eye(scores.size(0)) > 0.5
    cost_s = (margin + scores - d1).clamp(min=0).masked_fill(eye, 0).max(1)[0]
    cost_im = (margin + scores - d2).clamp(min=0).masked_fill(eye, 0).max(0)[0]
    return cost_s.sum() + cost_im.sum()


def ref_forward_loss(cap_p, cap_i, vid_p, vid_i, cap_tp, cap_ti, vid_tp, vid_ti, target, margin=0.2, margin_2=0.2):
    """model.py:592-621."""
    batch_size = cap_p.shape[0]
    loss_1 = ref_triplet(cap_p, vid_p, margin, "cosine") + ref_triplet(cap_i, vid_i, margin, "cosine")
    loss_2 = ref_triplet(cap_tp, vid_tp, margin_2, "jaccard") + ref_triplet(cap_ti, vid_ti, margin_2, "jaccard")
    bce = torch.nn.BCELoss()
    loss_3 = bce(vid_tp, target) + bce(vid_ti, target)
    loss_4 = bce(cap_tp, target) + bce(cap_ti, target)
    return loss_1 + loss_2 + batch_size * (loss_3 + loss_4)


def ref_norm_score(errors: np.ndarray) -> np.ndarray:
    """validate.py:7-11."""
    score = -errors
    score = score - np.min(score)
    score = score / np.max(score)
    return -score


def ref_l2norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_fused_errors(cap: dict, vid: dict) -> np.ndarray:
    """tester.py:159-170 with evaluation.py:17-72 (cal_error cosine, cal_error_batch jaccard in chunks of 2000)."""
    errors = {b: -np.dot(ref_l2norm(cap[b]), ref_l2norm(vid[b]).T) for b in ("preview", "intensive")}
    for b in ("preview", "intensive"):
        c, v = torch.tensor(cap[f"{b}_concepts"]), torch.tensor(vid[f"{b}_concepts"])
        errors[f"{b}_concepts"] = -ref_jaccard_sim(c, v).numpy()
    n = {k: ref_norm_score(e) for k, e in errors.items()}
    return 0.6 * (n["preview"] + n["intensive"]) + 0.4 * (n["preview_concepts"] + n["intensive_concepts"])


def ref_metrics(errors: np.ndarray, query_to_video: np.ndarray) -> dict[str, float]:
    """util/metrics.py:60-157 (eval_q2m both ways, t2v_map, v2t_map with APScorer, basic/metric.py:31-46)."""

    def ap(sorted_labels):
        rel, total = 0, 0.0
        for i, label in enumerate(sorted_labels):
            if label >= 1:
                rel += 1
                total += rel / (i + 1.0)
        return total / max(rel, 1)

    def q2m(scores, gts):
        ranks = np.array(
            [min(np.where(np.argsort(s) == k)[0][0] + 1 for k in gt) for s, gt in zip(scores, gts, strict=True)]
        )
        out = [100.0 * np.mean(ranks <= k) for k in (1, 5, 10)]
        return out + [float(np.median(ranks)), float(ranks.mean())]

    v2t_gt = [list(np.where(query_to_video == j)[0]) for j in range(errors.shape[1])]
    t2v = q2m(errors, [[g] for g in query_to_video])
    v2t = q2m(errors.T, v2t_gt)
    t2v_map = np.mean([ap([int(j == g) for j in np.argsort(e)]) for e, g in zip(errors, query_to_video, strict=True)])
    v2t_map = np.mean([ap([int(i in gt) for i in np.argsort(errors[:, j])]) for j, gt in enumerate(v2t_gt)])
    keys = ("r1", "r5", "r10", "medr", "meanr")
    report = {f"t2v_{k}": v for k, v in zip(keys, t2v, strict=True)} | {
        f"v2t_{k}": v for k, v in zip(keys, v2t, strict=True)
    }
    return report | {"t2v_map": 100 * t2v_map, "v2t_map": 100 * v2t_map}


# --- helpers -------------------------------------------------------------------------------------------------------
def padded_videos(lengths: list[int], dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    videos = torch.randn(len(lengths), max(lengths), dim, generator=generator, dtype=torch.float64)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return videos * mask.unsqueeze(-1), mask


def video_encoder(upstream: bool, seed: int = 0) -> PreviewIntensiveEncoder:
    torch.manual_seed(seed)
    encoder = PreviewIntensiveEncoder(12, preview_size=6, intensive_dim=10, key_dim=5, upstream_padding=upstream)
    return encoder.double().eval()


def text_encoder(upstream: bool, sentence_dim: int = 0) -> MultiLevelTextEncoder:
    torch.manual_seed(1)
    encoder = MultiLevelTextEncoder(
        30, 26, word_dim=9, rnn_size=5, kernel_num=4, sentence_dim=sentence_dim, upstream_padding=upstream
    )
    return encoder.double().eval()


def captions(lengths: list[int], seed: int):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (len(lengths), max(lengths)), generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    bows = torch.rand(len(lengths), 26, generator=generator, dtype=torch.float64).round()
    return ids * mask, mask.long(), bows


def grads(loss: torch.Tensor, tensors) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors, retain_graph=True))


# --- tests ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("upstream", [False, True])
def test_paa_matches_the_official_formula_with_gradients(upstream):
    torch.manual_seed(0)
    paa = PreviewAwareAttention(6, 10, 4, upstream_padding=upstream).double().eval()
    x, mask = padded_videos([5, 3, 1], 10, seed=2)
    # the official inputs are masked ReLU features (>= 0, zero padding); kept > 0 so that no max is a tie
    x = ((x.abs() + 0.1) * mask.unsqueeze(-1)).requires_grad_()
    y = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    ours, ref = paa(x, mask, y), ref_paa(paa, mask.double(), x, y.unsqueeze(1))
    torch.testing.assert_close(ours, ref, **TOL)
    params = [x, y, *paa.parameters()]
    for a, b in zip(grads(ours.square().sum(), params), grads(ref.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_paa_upstream_residual_pools_over_padding_of_any_sign():
    torch.manual_seed(0)
    paa = PreviewAwareAttention(6, 10, 4, upstream_padding=True).double().eval()
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    y = torch.randn(2, 6, dtype=torch.float64)
    torch.testing.assert_close(paa(x, mask, y), ref_paa(paa, mask.double(), x, y.unsqueeze(1)), **TOL)


def test_video_encoder_with_upstream_padding_matches_the_official_forward():
    encoder = video_encoder(upstream=True)
    lengths = [7, 5, 2, 1]  # 2 and 1 frames: the truncated clip counts 1 and 0 (model.py:56)
    videos, mask = padded_videos(lengths, 12, seed=3)
    videos.requires_grad_()
    preview, intensive, _ = encoder.encode(videos, mask)
    ref_preview, ref_intensive = ref_video(encoder, videos, lengths)
    torch.testing.assert_close(preview, ref_preview, **TOL)
    torch.testing.assert_close(intensive, ref_intensive, **TOL)
    params = [videos, *encoder.parameters()]
    ours = grads(preview.sum() + intensive.square().sum(), params)
    for a, b in zip(ours, grads(ref_preview.sum() + ref_intensive.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_video_encoder_default_matches_the_official_forward_without_padding():
    corrected, upstream = video_encoder(upstream=False), video_encoder(upstream=True)
    videos, mask = padded_videos([6, 6, 6], 12, seed=4)
    ours = torch.cat(corrected.encode(videos, mask)[:2], 1)
    torch.testing.assert_close(ours, torch.cat(ref_video(upstream, videos, [6, 6, 6]), 1), **TOL)


def test_video_encoder_default_gives_each_video_its_unbatched_official_vector():
    corrected, upstream = video_encoder(upstream=False), video_encoder(upstream=True)
    lengths = [8, 5, 3]
    videos, mask = padded_videos(lengths, 12, seed=5)
    batched = torch.cat(corrected.encode(videos, mask)[:2], 1)
    for i, length in enumerate(lengths):
        alone = torch.cat(ref_video(upstream, videos[i : i + 1, :length], [length]), 1)
        torch.testing.assert_close(batched[i : i + 1], alone, **TOL)
    official = torch.cat(ref_video(upstream, videos, lengths), 1)
    assert not torch.allclose(official[1:], batched[1:], atol=1e-4), "upstream should depend on the batch padding"


@pytest.mark.parametrize("sentence_dim", [0, 7])
def test_text_encoder_with_upstream_padding_matches_the_official_forward(sentence_dim):
    encoder = text_encoder(upstream=True, sentence_dim=sentence_dim)
    lengths = [9, 6, 4, 2]
    ids, mask, bows = captions(lengths, seed=6)
    bert = torch.randn(4, sentence_dim, dtype=torch.float64) if sentence_dim else None
    ours = encoder(ids, mask, bows, bert)
    ref = ref_text(encoder, ids, lengths, bows, bert)
    torch.testing.assert_close(ours, ref, **TOL)
    params = list(encoder.parameters())
    for a, b in zip(grads(ours.square().sum(), params), grads(ref.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_text_encoder_default_gives_each_caption_its_unbatched_official_vector():
    corrected, upstream = text_encoder(upstream=False), text_encoder(upstream=True)
    lengths = [8, 5, 2]
    ids, mask, bows = captions(lengths, seed=7)
    batched = corrected(ids, mask, bows)
    for i, length in enumerate(lengths):
        alone = ref_text(upstream, ids[i : i + 1, :length], [length], bows[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, **TOL)


def test_soft_jaccard_triplet_matches_the_official_loss_with_gradients():
    generator = torch.Generator().manual_seed(8)
    text = torch.rand(6, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    video = torch.rand(6, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(soft_jaccard(video, text), ref_jaccard_sim(video, text), **TOL)
    context = pair_context(soft_jaccard(text, video), torch.eye(6, dtype=torch.bool), "text_preview_concepts")
    ours = TripletObjective(margin=0.2)(context)
    ref = ref_triplet(text, video, 0.2, "jaccard")
    torch.testing.assert_close(ours, ref, **TOL)
    for a, b in zip(grads(ours, [text, video]), grads(ref, [text, video]), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def small_rivrl(**overrides) -> RIVRL:
    torch.manual_seed(9)
    arguments = dict(
        visual_dim=12,
        vocab_size=30,
        preview_size=6,
        intensive_dim=10,
        key_dim=5,
        word_dim=9,
        text_rnn_size=5,
        text_kernel_num=4,
        latent_dim=8,
        concept_dim=7,
        dropout=0.0,
        attention_dropout=0.0,
        ffn_dropout=0.0,
        upstream_padding=True,
        mask_same_item=False,
    )
    return RIVRL(**(arguments | overrides)).double()


def test_hybrid_loss_matches_the_official_forward_loss_with_gradients():
    model = small_rivrl().train()
    video_lengths, text_lengths = [6, 4, 4, 3, 2], [7, 5, 5, 3, 2]
    videos, video_mask = padded_videos(video_lengths, 12, seed=10)
    ids, text_mask, bows = captions(text_lengths, seed=11)
    tags = torch.rand(5, 7, dtype=torch.float64) * (torch.rand(5, 7, dtype=torch.float64) > 0.5)
    batch = {
        "visual": videos,
        "visual_mask": video_mask,
        "visual_index": torch.arange(5),
        "text": {"source": {"input_ids": ids, "attention_mask": text_mask, "bow": bows}},
        "extras": {"tags": {"values": tags}},
    }
    losses = model.compute_losses(batch)
    # the reference: official encoders and heads with the same weights, then forward_loss (BN in training mode)
    preview, intensive = ref_video(model.video, videos, video_lengths)
    text = ref_text(model.text, ids, text_lengths, bows)
    vid_p, vid_tp = ref_hybrid_mapping(model.video_heads["preview"], preview)
    vid_i, vid_ti = ref_hybrid_mapping(model.video_heads["intensive"], intensive)
    cap_p, cap_tp = ref_hybrid_mapping(model.text_heads["preview"], text)
    cap_i, cap_ti = ref_hybrid_mapping(model.text_heads["intensive"], text)
    ref = ref_forward_loss(cap_p, cap_i, vid_p, vid_i, cap_tp, cap_ti, vid_tp, vid_ti, tags)
    torch.testing.assert_close(losses["loss"], ref, **TOL)
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(grads(losses["loss"], params), grads(ref, params), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_evaluation_fusion_and_metrics_match_the_official_tester():
    generator = torch.Generator().manual_seed(12)
    num_captions, num_videos = 37, 11
    query_to_video = torch.randint(0, num_videos, (num_captions,), generator=generator)
    query_to_video[:num_videos] = torch.arange(num_videos)
    cap, vid = {}, {}
    for branch in ("preview", "intensive"):
        cap[branch] = F.normalize(torch.randn(num_captions, 8, generator=generator, dtype=torch.float64), dim=1)
        vid[branch] = F.normalize(torch.randn(num_videos, 8, generator=generator, dtype=torch.float64), dim=1)
        cap[f"{branch}_concepts"] = torch.rand(num_captions, 6, generator=generator, dtype=torch.float64)
        vid[f"{branch}_concepts"] = torch.rand(num_videos, 6, generator=generator, dtype=torch.float64)
    errors = ref_fused_errors({k: v.numpy() for k, v in cap.items()}, {k: v.numpy() for k, v in vid.items()})
    scorer = small_rivrl(upstream_padding=False).scorer("test")
    scorer.fit(cap, vid, chunk_size=5)
    fused = torch.cat([scorer({k: v[s : s + 5] for k, v in cap.items()}, vid) for s in range(0, num_captions, 5)])
    np.testing.assert_allclose(fused.double().numpy(), -errors, rtol=1e-6, atol=1e-6)
    report = retrieval_report_from_views(cap, vid, query_to_video, small_rivrl().scorer("test"), chunk_size=4)
    expected = ref_metrics(errors, query_to_video.numpy())
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
