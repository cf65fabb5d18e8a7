"""Parity with the data pipeline of wjun0830/CGDETR @ 212b2e4, the code the DETR family's Charades-STA and TACoS
recipes come from: window-only saliency labels counted with clip length duration / n_clips, the hinge clips and
their fallback (own references of cg_detr/start_end_dataset.py, compared with the package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leccr_lightning.data.grounding.annotations import read_qvhighlights
from leccr_lightning.data.grounding.dataset import GroundingDataset
from leccr_lightning.data.grounding.features import ClipFeatures, QueryFeatures
from leccr_lightning.data.grounding.saliency import NO_HARD_PAIR, draw_saliency_pairs
from leccr_lightning.data.grounding.synthetic import write_grounding_collection


def ref_sub_as_query(gt_window: list[float], duration: float, ctx_l: int):
    """cg_detr/start_end_dataset.py:226-251: the positive and negative pools and the 0/1 rank labels."""
    clip_len = duration / ctx_l
    gt_st = int(gt_window[0] / clip_len)
    gt_ed = max(0, min(int(gt_window[1] / clip_len), ctx_l) - 1)
    gt_st = min(gt_st, gt_ed)
    neg_pool = list(range(0, gt_st)) + list(range(gt_ed + 1, ctx_l))
    score_array = np.zeros(ctx_l)
    score_array[gt_st : gt_ed + 1] = 1
    return list(range(gt_st, gt_ed + 1)), neg_pool, score_array


@pytest.fixture(scope="module")
def window_only(tmp_path_factory: pytest.TempPathFactory) -> GroundingDataset:
    """The synthetic collection read as window-only annotations (its saliency scores dropped), with durations that
    are not a multiple of the clip length, as Charades-STA's."""
    root = write_grounding_collection(tmp_path_factory.mktemp("cgdetr"), seed=7, n_queries=(16, 2, 2))
    records = read_qvhighlights(root / "annotations/highlight_train_release.jsonl")
    for k, rec in enumerate(records):
        rec.saliency_scores, rec.relevant_clip_ids = None, None
        rec.duration += 0.37 * (k % 3)
        rec.windows = rec.windows + np.array([0.21, -0.13]) * (k % 2)
    video = ClipFeatures([root / "features/video_a", root / "features/video_b"])
    text = QueryFeatures(root / "features/text")
    return GroundingDataset(records, video, text, clip_len=2.0, window_clips_from="duration")


def test_window_labels_count_clips_of_duration_over_n_clips(window_only: GroundingDataset) -> None:
    differs = 0
    for index, rec in enumerate(window_only.records):
        item = window_only[index]
        n_clips = len(item["visual"])
        inside, outside, score_array = ref_sub_as_query(rec.windows[0].tolist(), rec.duration, n_clips)
        assert np.array_equal(item["saliency"].numpy(), score_array)
        assert item["relevant"].nonzero().flatten().tolist() == inside
        assert torch.equal(item["hard_pairs"], torch.tensor([NO_HARD_PAIR, NO_HARD_PAIR]))
        fixed = GroundingDataset([rec], window_only.video, window_only.text, clip_len=2.0)[0]
        differs += not torch.equal(fixed["relevant"], item["relevant"])
    assert differs > 0  # the two clip lengths give different clips on these durations


def test_hinge_clips_and_fallback_follow_cg_detr() -> None:
    """random.sample(k=2) of each pool (cg_detr/start_end_dataset.py:233-245); a pool of fewer than 2 negatives
    makes the positives the negatives (:242-245)."""
    rng = np.random.default_rng(3)
    for window, duration, ctx_l in (([3.1, 9.7], 30.96, 31), ([0.0, 29.0], 30.0, 30), ([0.0, 30.0], 30.0, 30)):
        inside, outside, score_array = ref_sub_as_query(window, duration, ctx_l)
        relevant = score_array.astype(bool)
        draws = [draw_saliency_pairs(relevant, NO_HARD_PAIR, NO_HARD_PAIR, rng) for _ in range(300)]
        assert {c for p, _ in draws for c in p} == set(inside) and all(p[0] != p[1] for p, _ in draws)
        if len(outside) >= 2:
            assert {c for _, n in draws for c in n} == set(outside) and all(n[0] != n[1] for _, n in draws)
        else:
            assert all(n == p for p, n in draws)
