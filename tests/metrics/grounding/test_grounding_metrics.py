"""Official QVHighlights metric parity, §6.1 edge cases, and world-size invariance of GroundingMetric."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.metrics.grounding import (
    GroundingMetric,
    binary_average_precision,
    grounding_report,
    intersection_over_hull,
    moment_retrieval_report,
    query_average_precision,
    temporal_iou,
)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_official_sample_parity(shared_data: Path) -> None:
    folder = shared_data / "qvhighlights"
    preds = _read_jsonl(folder / "sample_val_preds.jsonl")
    gt = _read_jsonl(folder / "highlight_val_release.jsonl")
    raw = json.loads((folder / "sample_val_preds_metrics_raw.json").read_text())
    brief = grounding_report(preds, gt)
    for key, value in raw["brief"].items():
        assert brief[key] == value, key
    nested = moment_retrieval_report(preds, gt)
    for bucket in ("full", "short", "middle", "long"):
        for family in ("MR-mAP", "MR-R1"):
            for thd, value in raw[bucket][family].items():
                assert nested[bucket][family][thd] == value, (bucket, family, thd)


def test_iou_helpers_agree_and_handle_zero_length() -> None:
    a = torch.tensor([[0.0, 10.0], [5.0, 6.0], [3.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[5.0, 15.0], [20.0, 30.0], [3.0, 3.0]], dtype=torch.float64)
    cross, _ = temporal_iou(a, b)
    assert cross[0, 0] == pytest.approx(5 / 15)
    assert cross[0, 1] == 0.0
    assert torch.allclose(torch.diag(cross), intersection_over_hull(a, b))
    assert cross[2, 2] == 0.0
    assert torch.isnan(temporal_iou(a, b, parity_mode=True)[0][2, 2])


def _gt(qid: int, windows: list[list[float]]) -> dict:
    return {"qid": qid, "duration": 150, "relevant_windows": windows}


def _pred(qid: int, windows: list[list[float]]) -> dict:
    return {"qid": qid, "pred_relevant_windows": windows}


def test_average_precision_edge_cases() -> None:
    gt = np.array([[10.0, 20.0]])
    dup = query_average_precision(gt, np.array([[10.0, 20.0, 0.9], [10.0, 20.0, 0.8]]))
    assert np.allclose(dup, 1.0)
    fp_first = query_average_precision(gt, np.array([[50.0, 60.0, 0.9], [10.0, 20.0, 0.8]]))
    assert np.allclose(fp_first, 0.5)
    two_gt = query_average_precision(np.array([[10.0, 20.0], [40.0, 50.0]]), np.array([[10.0, 20.0, 0.9]]))
    assert np.allclose(two_gt, 0.5)
    at_threshold = query_average_precision(gt, np.array([[10.0, 30.0, 0.9]]))
    assert at_threshold[0] == 1.0 and at_threshold[1] == 0.0
    zero = np.array([[5.0, 5.0]])
    assert query_average_precision(zero, np.array([[5.0, 5.0, 1.0]]), parity_mode=True)[0] == 1.0
    assert query_average_precision(zero, np.array([[5.0, 5.0, 1.0]]))[0] == 0.0


def test_r1_miou_and_buckets_hand_checked() -> None:
    gt = [_gt(1, [[0, 10]]), _gt(2, [[20, 60]])]
    preds = [_pred(1, [[0, 6, 0.9], [0, 10, 0.1]]), _pred(2, [[20, 40, 0.5]])]
    brief = grounding_report(preds, gt)
    assert brief["MR-full-R1@0.3"] == 100.0
    assert brief["MR-full-R1@0.5"] == 100.0
    assert brief["MR-full-R1@0.7"] == 0.0
    assert brief["MR-full-mIoU"] == 55.0
    assert brief["MR-short-mAP"] == 65.0
    assert brief["MR-long-mAP"] == 10.0
    assert "MR-middle-mAP" not in brief
    assert "HL-min-Fair-mAP" not in brief


def test_highlight_ap_and_hit() -> None:
    assert binary_average_precision(np.zeros(4), np.arange(4.0)) == 0.0
    assert binary_average_precision(np.ones(4), np.arange(4.0)) == 1.0
    assert binary_average_precision(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.9, 0.8, 0.1, 0.0])) == (
        pytest.approx((0.5 + 0.5) / 2)
    )
    assert binary_average_precision(np.array([1.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.1])) == pytest.approx(2 / 3)
    gt = [
        {
            **_gt(7, [[2, 6]]),
            "duration": 8,
            "relevant_clip_ids": [1, 2],
            "saliency_scores": [[4, 4, 4], [2, 1, 1]],
        }
    ]
    preds = [{**_pred(7, [[2, 6, 1.0]]), "pred_saliency_scores": [0.1, 0.2, 0.9, 0.0]}]
    brief = grounding_report(preds, gt)
    assert brief["HL-min-Fair-Hit1"] == 100.0
    assert brief["HL-min-VeryGood-Hit1"] == 0.0
    assert brief["HL-min-VeryGood-mAP"] == 50.0


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="same qids"):
        grounding_report([_pred(1, [[0, 1, 1]])], [_gt(2, [[0, 1]])])
    with pytest.raises(ValueError, match="qid 1"):
        grounding_report([_pred(1, [])], [_gt(1, [[0, 1]])])


def _toy_split(n: int = 9, seed: int = 0) -> tuple[list[dict], list[list[list[float]]], list[list[float]]]:
    rng = random.Random(seed)
    gt, windows, saliency = [], [], []
    for i in range(n):
        st = 2 * rng.randrange(0, 20)
        gt.append(
            {
                "qid": 100 + i,
                "duration": 60,
                "relevant_windows": [[st, st + 10]],
                "relevant_clip_ids": list(range(st // 2, st // 2 + 5)),
                "saliency_scores": [[rng.randrange(5) for _ in range(3)] for _ in range(5)],
            }
        )
        windows.append([[2.0 * rng.randrange(25), 2.0 * rng.randrange(25, 30), rng.random()] for _ in range(4)])
        saliency.append([rng.random() for _ in range(30)])
    return gt, windows, saliency


def _update(metric: GroundingMetric, positions: list[int], windows: list, saliency: list) -> None:
    metric.update(
        torch.tensor(positions),
        [torch.tensor(windows[p]) for p in positions],
        [torch.tensor(saliency[p]) for p in positions],
    )


def _ddp_worker(rank: int, world: int, init_file: str, queue: mp.Queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    gt, windows, saliency = _toy_split()
    padded = list(range(len(gt))) + list(range(-len(gt) % world))
    metric = GroundingMetric(gt)
    _update(metric, padded[rank::world], windows, saliency)
    queue.put((rank, {k: float(v) for k, v in metric.compute().items()}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_metric_identical_with_one_and_two_processes(tmp_path: Path) -> None:
    gt, windows, saliency = _toy_split()
    single = GroundingMetric(gt)
    order = list(range(len(gt)))
    random.Random(1).shuffle(order)
    _update(single, order[:4], windows, saliency)
    _update(single, order[4:] + order[:2], windows, saliency)
    expected = single.compute()
    direct = grounding_report(
        [
            {"qid": g["qid"], "pred_relevant_windows": w, "pred_saliency_scores": s}
            for g, w, s in zip(gt, windows, saliency, strict=True)
        ],
        gt,
    )
    assert expected == direct
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "pg"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0] == expected
    assert results[1] == expected
