"""Plots during training (``RetrievalPlots``): the recall curve and rank histogram of every validation and test epoch
logged to an offline W&B run and to TensorBoard, checked in the files those loggers write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from leccr_lightning.callbacks.plots import recall_curve
from tests.helpers import experiment

PLOTS = "--trainer.callbacks+=leccr_lightning.callbacks.plots.RetrievalPlots"
RANKS = "--trainer.callbacks+=leccr_lightning.callbacks.ranks.RankWriter"


def test_recall_curve_of_hand_made_ranks():
    ks, recall = recall_curve([1, 2, 2, 5], 6)
    assert ks.tolist() == [1, 2, 3, 4, 5, 6]
    assert recall.tolist() == [25.0, 75.0, 75.0, 75.0, 100.0, 100.0]


def run_args(root: Path, out: Path, logger: str, *extra: str) -> list[str]:
    return [
        "--config", experiment("baseline"), "--data.init_args.root", str(root),
        "--trainer.default_root_dir", str(out), f"--trainer.logger={logger}",
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.max_epochs", "2", "--test_after_fit", "true",
        *extra,
    ]  # fmt: skip


def test_plots_reach_an_offline_wandb_run(synthetic_root, tmp_path, monkeypatch):
    import wandb

    from leccr_lightning.cli import lightning_main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("sys.argv", ["leccr"])
    args = run_args(synthetic_root, tmp_path, "lightning.pytorch.loggers.WandbLogger", PLOTS, RANKS)
    try:
        lightning_main(["fit", *args, "--trainer.logger.init_args.offline", "true"])
    finally:
        wandb.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    val_images, test_images = (
        sorted((media / "images" / "val").glob("*.png")),
        list((media / "images" / "test").glob("*.png")),
    )
    assert len(val_images) == 2 * 2 and len(test_images) == 2  # recall curve + rank histogram per epoch
    assert all(imread(p).shape[0] >= 300 for p in [*val_images, *test_images])
    (table_file,) = (media / "table" / "test").glob("recall_at_k_*.table.json")
    table = json.loads(table_file.read_text(encoding="utf-8"))
    assert table["columns"] == ["K", "t2v_recall", "v2t_recall"]
    (ranks_file,) = tmp_path.rglob("ranks.json")
    ranks = json.loads(ranks_file.read_text(encoding="utf-8"))
    assert len(table["data"]) == ranks["gallery_size"] == 31
    t2v = np.asarray(ranks["t2v"]["ranks"])
    assert [row[1] for row in table["data"]] == pytest.approx([100 * np.mean(t2v <= k) for k in range(1, 32)])
    assert len(list((media / "table" / "val").glob("*.table.json"))) == 2


def test_plots_reach_tensorboard_and_png_files(synthetic_root, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from leccr_lightning.cli import lightning_main

    monkeypatch.setattr("sys.argv", ["leccr"])
    args = run_args(synthetic_root, tmp_path, "lightning.pytorch.loggers.TensorBoardLogger", PLOTS)
    cli = lightning_main(["fit", *args, "--trainer.callbacks.save_png", "true", RANKS])
    # fit and the test after it each write an event file into the version folder; the accumulator reads both
    accumulator = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = accumulator.Tags()
    for stage in ("val", "test"):
        assert {f"{stage}/recall_curve", f"{stage}/rank_histogram"} <= set(tags["images"])
        assert {f"{stage}/t2v_rank", f"{stage}/v2t_rank"} <= set(tags["histograms"])
    assert len(accumulator.Images("val/recall_curve")) == 2
    ranks = json.loads((Path(cli.trainer.log_dir) / "ranks.json").read_text(encoding="utf-8"))
    (histogram,) = accumulator.Histograms("test/t2v_rank")
    assert histogram.histogram_value.num == len(ranks["t2v"]["ranks"])
    assert histogram.histogram_value.min == min(ranks["t2v"]["ranks"])
    assert histogram.histogram_value.max == max(ranks["t2v"]["ranks"])
    pngs = sorted(p.name for p in (Path(cli.trainer.log_dir) / "plots").glob("*.png"))
    assert pngs == [
        "test_epoch002_rank_histogram.png", "test_epoch002_recall_curve.png",
        "val_epoch000_rank_histogram.png", "val_epoch000_recall_curve.png",
        "val_epoch001_rank_histogram.png", "val_epoch001_recall_curve.png",
    ]  # fmt: skip
