"""Retrieval plots: recall@K curves, rank histograms, SumR bars, DCOT confidences, grounding R1@IoU (matplotlib).

The figure functions return ``matplotlib.figure.Figure`` objects drawn without pyplot (no GUI backend, no global
state; ``fig.savefig`` renders with Agg); ``leccr report`` saves them as PNG. ``RetrievalPlots`` draws the recall@K
curve and the rank histogram of every validation and test epoch from the ranks the evaluation counted
(``RankCollector``) and logs them to Weights & Biases (images, plus the curve as a table) and TensorBoard (figures,
plus the rank histograms); drawing costs time, so no tiny recipe turns it on (add it with
``--trainer.callbacks+=leccr_lightning.callbacks.plots.RetrievalPlots``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from lightning.pytorch.loggers import WandbLogger
from matplotlib.figure import Figure

from leccr_lightning.callbacks.ranks import RankCollector, run_folder

DIRECTIONS = {"t2v": "text-to-visual", "v2t": "visual-to-text"}
_RECALL_KEY = {direction: re.compile(rf"^{direction}_r(\d+)$") for direction in DIRECTIONS}


def recall_curve(ranks: Sequence[int], max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(K = 1..max_k, recall@K in percent) of 1-based ranks."""
    ranks = np.asarray(ranks)
    ks = np.arange(1, max_k + 1)
    return ks, 100.0 * (ranks[None, :] <= ks[:, None]).mean(axis=1)


def recall_figure(
    curves: Mapping[str, Mapping[str, Sequence[int]]],
    max_k: int,
    title: str = "",
    points: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Recall@K against K (log scale), one panel per direction. ``curves``: label -> direction -> ranks (a full
    curve); ``points``: label -> metrics with ``<direction>_r<K>`` keys (markers at those K only)."""
    rows_of_legend = -(-(len(curves) + len(points or {})) // 2)
    figure = Figure(figsize=(10, 4 + 0.22 * rows_of_legend), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (direction, name) in zip(axes, DIRECTIONS.items(), strict=True):
        for label, ranks in curves.items():
            if direction in ranks:
                ks, recall = recall_curve(ranks[direction], max_k)
                ax.plot(ks, recall, label=label)
        for label, metrics in (points or {}).items():
            found = sorted((int(m.group(1)), v) for k, v in metrics.items() if (m := _RECALL_KEY[direction].match(k)))
            if found:
                ax.plot([k for k, _ in found], [v for _, v in found], "o--", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_title(f"{name} recall@K")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("recall@K (%)")
    handles = {}
    for ax in axes:
        handles.update({label: handle for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)})
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize=7)
    if title:
        figure.suptitle(title)
    return figure


def rank_histogram_figure(ranks: Mapping[str, Sequence[int]], gallery_size: int, title: str = "") -> Figure:
    """Histogram of ranks (log-spaced bins from 1 to the gallery size, heights = fraction of the label's queries),
    one outline per label."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    edges = np.unique(np.geomspace(1, gallery_size + 1, num=min(30, gallery_size + 1)).round())
    for label, values in ranks.items():
        values = np.asarray(values)
        weights = np.full(len(values), 1.0 / len(values))
        ax.hist(values, bins=edges, weights=weights, histtype="step", linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("rank of the matching item (1 = retrieved first; bins [a, b) on a log scale)")
    ax.set_ylabel("fraction of queries")
    ax.set_title(title or "text-to-visual rank histogram")
    ax.legend(fontsize=7)
    return figure


def sumr_figure(labels: Sequence[str], values: Sequence[Sequence[float]], key: str = "sumr") -> Figure:
    """Bars of the mean of ``key`` per label with ± one standard deviation, every seed as a dot."""
    figure = Figure(figsize=(max(6, 1.2 * len(labels) + 2), 4.5), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(labels))
    means = [float(np.mean(v)) for v in values]
    stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
    ax.bar(positions, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.7)
    for x, seeds in zip(positions, values, strict=True):
        ax.plot(np.full(len(seeds), x), seeds, "k.", markersize=6)
    ax.set_xticks(positions, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(key)
    ax.set_title(f"{key} per setting (mean ± std over seeds)", fontsize=10)
    return figure


def confidence_figure(groups: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Figure:
    """Histograms of DCOT confidences of clean vs corrupted MT pairs, one panel per label."""
    figure = Figure(figsize=(5 * len(groups), 4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(groups)))
    for ax, (label, (clean, corrupted)) in zip(axes, groups.items(), strict=True):
        values = np.concatenate([clean, corrupted])
        edges = np.linspace(values.min(), values.max(), 31)
        ax.hist(clean, bins=edges, alpha=0.6, density=True, label=f"clean ({len(clean)})")
        ax.hist(corrupted, bins=edges, alpha=0.6, density=True, label=f"corrupted ({len(corrupted)})")
        ax.set_xlabel("DCOT confidence of the MT pair (last epoch)")
        ax.set_ylabel("density")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8)
    return figure


def r1_iou_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Figure:
    """Moment retrieval R1@IoU against the IoU threshold, one line per label."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for label, (thresholds, recall) in curves.items():
        ax.plot(thresholds, recall, marker="o", label=label)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("R1@IoU (%)")
    ax.set_title("moment retrieval R1@IoU")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return figure


class RetrievalPlots(RankCollector):
    """Logs the recall@K curve (K up to ``max_k``) and the rank histogram of every ``stages`` epoch to the W&B and
    TensorBoard loggers of the trainer (other loggers are skipped); ``save_png`` also writes them under
    ``<run folder>/plots/``."""

    def __init__(self, stages: tuple[str, ...] = ("val", "test"), max_k: int = 100, save_png: bool = False):
        super().__init__(stages)
        self.max_k = max_k
        self.save_png = save_png

    def on_ranks(self, trainer, pl_module, stage, ranks) -> None:
        folder = run_folder(trainer) / "plots"
        if trainer.global_rank != 0:
            return
        max_k = min(self.max_k, ranks["gallery_size"])
        by_direction = {d: ranks[d]["ranks"] for d in DIRECTIONS}
        title = f"{stage} epoch {ranks['epoch']}"
        figures = {
            "recall_curve": recall_figure({type(pl_module).__name__: by_direction}, max_k, title),
            "rank_histogram": rank_histogram_figure({"t2v": by_direction["t2v"]}, ranks["gallery_size"], title),
        }
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(f"{stage}/plots", list(figures.values()), step=step, caption=list(figures))
                ks = range(1, max_k + 1)
                columns = ["K", *(f"{d}_recall" for d in DIRECTIONS)]
                rows = zip(ks, *(recall_curve(by_direction[d], max_k)[1].tolist() for d in DIRECTIONS), strict=True)
                logger.log_table(f"{stage}/recall_at_k", columns=columns, data=[list(r) for r in rows], step=step)
            elif hasattr(getattr(logger, "experiment", None), "add_figure"):
                for name, figure in figures.items():
                    logger.experiment.add_figure(f"{stage}/{name}", figure, global_step=step, close=False)
                for direction in DIRECTIONS:
                    logger.experiment.add_histogram(
                        f"{stage}/{direction}_rank", np.asarray(by_direction[direction]), step
                    )
        if self.save_png:
            folder.mkdir(parents=True, exist_ok=True)
            for name, figure in figures.items():
                figure.savefig(folder / f"{stage}_epoch{ranks['epoch']:03d}_{name}.png", dpi=100)
