"""Moment retrieval and highlight detection metrics, the official QVHighlights protocol.

Spec: grounding_methods §6. ``grounding_report`` takes the official submission records
(``{qid, pred_relevant_windows: [[st, ed, score], ...], pred_saliency_scores: [...]}``) and ground-truth
records (``{qid, duration, relevant_windows, relevant_clip_ids, saliency_scores}``) and returns the official
brief keys, rounded to 2 decimals as the official script prints them, plus ``MR-full-R1@0.3`` and
``MR-full-mIoU`` (the Charades-STA / TACoS convention of the DETR family, §6.2). ``GroundingMetric`` is the
torchmetrics wrapper: ragged list states gathered with ``dist_reduce_fx="cat"``, de-duplicated by query
index, so 1 and N processes give identical numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

MR_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # §6.1: 0.50:0.05:0.95
R1_EXTRA_THRESHOLDS: tuple[float, ...] = (0.3,)  # §6.2: Charades-STA / TACoS also report R1@0.3
LENGTH_RANGES: dict[str, tuple[float, float]] = {"short": (0, 10), "middle": (10, 30), "long": (30, 150)}
HL_MIN_SCORES: dict[str, int] = {"Fair": 2, "Good": 3, "VeryGood": 4}  # §6.1 saliency binarisation


def _round(value: float, digits: int | None) -> float:
    """Official rounding: ``float(f"{100 * v:.2f}")`` (or no rounding when ``digits`` is None)."""
    return float(100 * value) if digits is None else float(f"{100 * value:.{digits}f}")


def temporal_iou(
    spans1: torch.Tensor, spans2: torch.Tensor, parity_mode: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU [N, M] of every (s, e) span in ``spans1`` [N, 2] with every one in ``spans2`` [M, 2], and the union.

    IoU = inter / (l1 + l2 - inter). ``parity_mode`` mirrors the official helper: union 0 gives NaN (§6.1 edge
    cases); otherwise it gives 0. The one temporal IoU of the package: the metric calls it on float64 arrays, the
    DETR losses and the matcher on tensors with gradients.
    """
    left = torch.maximum(spans1[:, None, 0], spans2[None, :, 0])
    right = torch.minimum(spans1[:, None, 1], spans2[None, :, 1])
    inter = (right - left).clamp(min=0)
    union = (spans1[:, 1] - spans1[:, 0])[:, None] + (spans2[:, 1] - spans2[:, 0])[None, :] - inter
    if parity_mode:
        return inter / union, union
    return torch.where(union != 0, inter / torch.where(union != 0, union, 1), 0), union


def intersection_over_hull(spans1: torch.Tensor, spans2: torch.Tensor) -> torch.Tensor:
    """Row-wise inter / hull [N] of two (s, e) span lists, 0 where the hull is 0: the official R1 helper's "IoU"
    (jayleicn/moment_detr:standalone_eval/utils.py:15-31), equal to the IoU of overlapping spans and 0 otherwise."""
    inter = (torch.minimum(spans1[:, 1], spans2[:, 1]) - torch.maximum(spans1[:, 0], spans2[:, 0])).clamp(min=0)
    hull = torch.maximum(spans1[:, 1], spans2[:, 1]) - torch.minimum(spans1[:, 0], spans2[:, 0])
    return torch.where(hull != 0, inter / torch.where(hull != 0, hull, 1), 0)


def _iou_matrix(spans1: np.ndarray, spans2: np.ndarray, parity_mode: bool) -> np.ndarray:
    """``temporal_iou`` of two float64 span arrays, as an array."""
    return temporal_iou(torch.from_numpy(spans1), torch.from_numpy(spans2), parity_mode)[0].numpy()


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-point AP: pad, backward running max of precision, sum of delta-recall x precision."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def query_average_precision(
    gt_windows: np.ndarray,
    pred_windows: np.ndarray,
    thresholds: Sequence[float] = MR_IOU_THRESHOLDS,
    parity_mode: bool = False,
) -> np.ndarray:
    """AP of one query's predictions [P, 3] (st, ed, score) against its GT windows [G, 2], per IoU threshold.

    Predictions are stably sorted by descending score; each is a TP for the first untaken GT, in descending
    IoU order, with IoU >= t, else an FP (§6.1 step 2); #positives = G.
    """
    ap = np.zeros(len(thresholds))
    if len(pred_windows) == 0:
        return ap
    order = np.argsort(-pred_windows[:, 2], kind="stable")
    preds = pred_windows[order]
    ious = _iou_matrix(np.ascontiguousarray(preds[:, :2]), gt_windows, parity_mode)
    n_pred, n_gt = len(preds), len(gt_windows)
    tp = np.zeros((len(thresholds), n_pred))
    fp = np.zeros((len(thresholds), n_pred))
    taken = np.zeros((len(thresholds), n_gt), dtype=bool)
    for p in range(n_pred):
        row = ious[p]
        gt_order = row.argsort()[::-1]
        for t_idx, thd in enumerate(thresholds):
            for g in gt_order:
                if row[g] < thd:
                    break
                if taken[t_idx, g]:
                    continue
                tp[t_idx, p] = 1
                taken[t_idx, g] = True
                break
            if tp[t_idx, p] == 0:
                fp[t_idx, p] = 1
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(fp, axis=1)
    recall = tp_cum / float(n_gt)
    precision = tp_cum / (tp_cum + fp_cum)
    for t_idx in range(len(thresholds)):
        ap[t_idx] = _interpolated_ap(precision[t_idx], recall[t_idx])
    return ap


def binary_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Highlight AP of §6.1: interpolated precision averaged over the distinct recall levels.

    Tied scores form one threshold (as scikit-learn's ``precision_recall_curve``); all labels 0 gives 0 and
    all labels 1 gives 1.
    """
    if np.all(y_true == y_true[0]):
        return float(y_true[0] != 0)
    order = np.argsort(y_score, kind="mergesort")[::-1]
    score, label = y_score[order], y_true[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(score)), [len(score) - 1]])
    tps = np.cumsum(label)[last_of_tie]
    fps = 1 + last_of_tie - tps
    precision = (tps / (tps + fps))[::-1]
    recall = (tps / tps[-1])[::-1].astype(np.float32)
    precision = np.maximum.accumulate(np.concatenate([precision, [1.0]]))
    recall = np.concatenate([recall, np.float32([0.0])])
    return float(np.mean(precision[np.flatnonzero(np.diff(recall))]))


def _check_records(predictions: Sequence[Mapping], ground_truth: Sequence[Mapping]) -> None:
    """Raise ValueError unless both lists hold the same qids, once each, each with a predicted window."""
    pred_qids = [d["qid"] for d in predictions]
    gt_qids = [d["qid"] for d in ground_truth]
    for name, qids in (("predictions", pred_qids), ("ground truth", gt_qids)):
        if len(set(qids)) != len(qids):
            dup = next(q for q in qids if qids.count(q) > 1)
            raise ValueError(f"{name}: qid {dup!r} appears more than once")
    missing = set(gt_qids) - set(pred_qids)
    extra = set(pred_qids) - set(gt_qids)
    if missing or extra:
        raise ValueError(
            f"predictions and ground truth must hold the same qids: missing predictions for "
            f"{sorted(missing, key=str)[:5]}, predictions without ground truth {sorted(extra, key=str)[:5]}"
        )
    for d in predictions:
        if "pred_relevant_windows" in d and len(d["pred_relevant_windows"]) == 0:
            raise ValueError(f"qid {d['qid']!r}: pred_relevant_windows is empty; expected at least one window")


def _moment_metrics(
    predictions: Sequence[Mapping],
    gt_windows: Mapping[Any, np.ndarray],
    max_pred_windows: int,
    parity_mode: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: AP per threshold [N, 10], top-1 IoU [N] (official paired IoU vs the best-overlapping GT)."""
    aps, top1 = [], []
    for d in predictions:
        gts = gt_windows[d["qid"]]
        windows = np.asarray(d["pred_relevant_windows"], dtype=float).reshape(-1, 3)
        aps.append(query_average_precision(gts, windows[:max_pred_windows], parity_mode=parity_mode))
        first = np.ascontiguousarray(windows[:1, :2])
        best = int(np.argmax(_iou_matrix(first, gts, parity_mode)[0]))
        top1.append(float(intersection_over_hull(torch.from_numpy(first), torch.from_numpy(gts[best : best + 1]))[0]))
    return np.asarray(aps).reshape(-1, len(MR_IOU_THRESHOLDS)), np.asarray(top1)


def moment_retrieval_report(
    predictions: Sequence[Mapping],
    ground_truth: Sequence[Mapping],
    max_pred_windows: int = 10,
    parity_mode: bool = False,
    digits: int | None = 2,
) -> dict[str, dict[str, dict[str, float]]]:
    """Nested official moment-retrieval metrics: ``{range: {"MR-mAP": {thd|average: v}, "MR-R1": {thd: v}}}``.

    Ranges: ``full`` and the GT-length buckets short (0, 10], middle (10, 30], long (30, 150] (a query keeps
    its windows inside the bucket and is dropped when none remain). ``MR-R1`` also holds 0.3 and ``mIoU``.
    """
    report: dict[str, dict[str, dict[str, float]]] = {}
    ranges: dict[str, tuple[float, float] | None] = {**LENGTH_RANGES, "full": None}
    for name, bounds in ranges.items():
        gt_windows = {}
        for d in ground_truth:
            windows = [w for w in d["relevant_windows"] if bounds is None or bounds[0] < w[1] - w[0] <= bounds[1]]
            if windows:
                gt_windows[d["qid"]] = np.asarray(windows, dtype=float).reshape(-1, 2)
        preds = [d for d in predictions if d["qid"] in gt_windows]
        if not preds:
            continue
        aps, top1 = _moment_metrics(preds, gt_windows, max_pred_windows, parity_mode)
        ap_thds = aps.mean(0)
        mr_map = {str(t): _round(v, digits) for t, v in zip(MR_IOU_THRESHOLDS, ap_thds, strict=True)}
        mr_map["average"] = _round(float(np.mean(ap_thds)), digits)
        thresholds = sorted(set(MR_IOU_THRESHOLDS) | set(R1_EXTRA_THRESHOLDS))
        mr_r1 = {str(t): _round(float(np.mean(top1 >= t)), digits) for t in thresholds}
        mr_r1["mIoU"] = _round(float(np.mean(top1)), digits)
        report[name] = {"MR-mAP": mr_map, "MR-R1": mr_r1}
    return report


def saliency_labels(record: Mapping, clip_len: float = 2.0) -> np.ndarray:
    """Full-video annotator scores [int(duration / clip_len), 3], zero outside ``relevant_clip_ids``."""
    scores = np.zeros((int(record["duration"] / clip_len), 3))
    clip_ids = np.asarray(record["relevant_clip_ids"], dtype=int)
    scores[clip_ids] = np.asarray(record["saliency_scores"], dtype=float).reshape(len(clip_ids), 3)
    return scores


def highlight_report(
    predictions: Sequence[Mapping],
    ground_truth: Sequence[Mapping],
    clip_len: float = 2.0,
    digits: int | None = 2,
) -> dict[str, dict[str, float]]:
    """Official highlight-detection metrics ``{HL-min-<level>: {HL-mAP, HL-Hit1}}`` for Fair/Good/VeryGood.

    HIT@1: the argmax clip (first on ties) is a hit when any annotator's binary label there is 1. mAP: per
    (query, annotator) AP of the saliency (zero-padded or truncated to the GT length), averaged.
    """
    full_scores = {d["qid"]: saliency_labels(d, clip_len) for d in ground_truth}
    report = {}
    for level, min_score in HL_MIN_SCORES.items():
        hits, aps = [], []
        for d in predictions:
            labels = (full_scores[d["qid"]] >= min_score).astype(float)
            pred = np.asarray(d["pred_saliency_scores"], dtype=float)
            best = int(np.argmax(pred))
            hits.append(labels[best].max() if best < len(labels) else 0.0)
            fitted = np.zeros(len(labels))
            fitted[: min(len(pred), len(labels))] = pred[: len(labels)]
            aps.extend(binary_average_precision(labels[:, a], fitted) for a in range(labels.shape[1]))
        report[f"HL-min-{level}"] = {
            "HL-mAP": _round(float(np.mean(aps)), digits),
            "HL-Hit1": _round(float(np.mean(hits)), digits),
        }
    return report


def grounding_report(
    predictions: Sequence[Mapping],
    ground_truth: Sequence[Mapping],
    max_pred_windows: int = 10,
    clip_len: float = 2.0,
    parity_mode: bool = False,
    digits: int | None = 2,
) -> dict[str, float]:
    """Flat official brief keys plus ``MR-full-R1@0.3`` and ``MR-full-mIoU``.

    Keys: ``MR-full-{R1@0.5, R1@0.7, mAP, mAP@0.5, mAP@0.75}``, ``MR-{short,middle,long}-mAP`` and
    ``HL-min-{Fair,Good,VeryGood}-{mAP,Hit1}`` (HL only when every prediction has ``pred_saliency_scores`` and
    every GT has ``saliency_scores``).

    Values are percentages rounded to ``digits`` as printed by the official script; ``parity_mode`` reproduces
    the official NaN-as-TP behaviour of zero-length windows (§6.1 edge cases), off by default.
    """
    _check_records(predictions, ground_truth)
    brief: dict[str, float] = {}
    if predictions and all("pred_relevant_windows" in d for d in predictions):
        mr = moment_retrieval_report(predictions, ground_truth, max_pred_windows, parity_mode, digits)
        full = mr["full"]
        brief["MR-full-R1@0.3"] = full["MR-R1"]["0.3"]
        brief["MR-full-R1@0.5"] = full["MR-R1"]["0.5"]
        brief["MR-full-R1@0.7"] = full["MR-R1"]["0.7"]
        brief["MR-full-mIoU"] = full["MR-R1"]["mIoU"]
        brief["MR-full-mAP"] = full["MR-mAP"]["average"]
        brief["MR-full-mAP@0.5"] = full["MR-mAP"]["0.5"]
        brief["MR-full-mAP@0.75"] = full["MR-mAP"]["0.75"]
        for name in LENGTH_RANGES:
            if name in mr:
                brief[f"MR-{name}-mAP"] = mr[name]["MR-mAP"]["average"]
    with_saliency = all("pred_saliency_scores" in d for d in predictions) and all(
        "saliency_scores" in d and "relevant_clip_ids" in d for d in ground_truth
    )
    if predictions and with_saliency:
        for level, values in highlight_report(predictions, ground_truth, clip_len, digits).items():
            brief[f"{level}-mAP"] = values["HL-mAP"]
            brief[f"{level}-Hit1"] = values["HL-Hit1"]
    return brief


class GroundingMetric(Metric):
    """Accumulates predictions per query index and computes ``grounding_report`` once over all ranks.

    ``ground_truth`` lists the split's GT records; ``update`` takes dataset positions into it. States are
    ragged 1-D/2-D tensors with ``dist_reduce_fx="cat"``; after the gather the duplicates a DistributedSampler
    pads in are dropped (first occurrence per index) and queries are sorted by index, so the result does not
    depend on the world size or the sample order.
    """

    full_state_update = False

    def __init__(self, ground_truth: Sequence[Mapping], clip_len: float = 2.0, parity_mode: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ground_truth = list(ground_truth)
        self.clip_len = clip_len
        self.parity_mode = parity_mode
        for name in ("index", "n_windows", "windows", "n_clips", "saliency"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        index: torch.Tensor,
        windows: Sequence[torch.Tensor],
        saliency: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Add one batch: query positions [B], per query ranked windows [K_i, 3] (seconds), saliency [T_i]."""
        if len(windows) != len(index):
            raise ValueError(f"got {len(index)} query indices but {len(windows)} window lists")
        dev = self.device
        self.index.append(index.detach().long().reshape(-1).to(dev))
        self.n_windows.append(torch.tensor([len(w) for w in windows], dtype=torch.long, device=dev))
        self.windows.append(torch.cat([w.detach().double().reshape(-1, 3).to(dev) for w in windows]))
        if saliency is not None:
            self.n_clips.append(torch.tensor([len(s) for s in saliency], dtype=torch.long, device=dev))
            self.saliency.append(torch.cat([s.detach().double().reshape(-1).to(dev) for s in saliency]))

    def predictions(self) -> list[dict[str, Any]]:
        """The gathered, de-duplicated submission records, sorted by query index."""

        def cat(state: Any, dtype: torch.dtype) -> torch.Tensor:
            if isinstance(state, torch.Tensor):
                return state
            return torch.cat(state) if state else torch.zeros(0, dtype=dtype)

        index = cat(self.index, torch.long).tolist()
        win_splits = torch.split(cat(self.windows, torch.double), cat(self.n_windows, torch.long).tolist())
        n_clips = cat(self.n_clips, torch.long).tolist()
        sal_splits = torch.split(cat(self.saliency, torch.double), n_clips) if n_clips else [None] * len(index)
        records: dict[int, dict[str, Any]] = {}
        for pos, wins, sal in zip(index, win_splits, sal_splits, strict=True):
            if pos in records:
                continue
            gt = self.ground_truth[pos]
            record: dict[str, Any] = {
                "qid": gt["qid"],
                "query": gt.get("query", ""),
                "vid": gt.get("vid", ""),
            }
            record["pred_relevant_windows"] = [[round(v, 4) for v in row] for row in wins.tolist()]
            if sal is not None:
                record["pred_saliency_scores"] = sal.tolist()
            records[pos] = record
        return [records[pos] for pos in sorted(records)]

    def compute(self) -> dict[str, float]:
        """``grounding_report`` over the queries seen on any rank (the GT is restricted to those queries)."""
        preds = self.predictions()
        seen = {d["qid"] for d in preds}
        gt = [d for d in self.ground_truth if d["qid"] in seen]
        return grounding_report(preds, gt, clip_len=self.clip_len, parity_mode=self.parity_mode)
