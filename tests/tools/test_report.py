"""``leccr report``: settings over seeds, mean ± std, markdown/CSV, and the PNG plots, on hand-written run folders and
on real tiny runs (baseline and DCOT over two seeds on a 40%-noisy collection, plus one grounding run)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from leccr_lightning.cli import lightning_main, main
from leccr_lightning.tools import load_tool
from leccr_lightning.tools.report import corrupted_source_ids, find_runs
from tests.helpers import cli_args, experiment

BASELINE = "leccr_lightning.methods.baseline.DualEncoderBaseline"


def write_run(folder: Path, config: dict, metrics: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (folder / "test_metrics.json").write_text(json.dumps({f"test/{k}": v for k, v in metrics.items()}))


def retrieval_config(seed: int, objective: str | None = None, out: str = "runs/x") -> dict:
    model = {"class_path": BASELINE, "init_args": {"embed_dim": 128}}
    if objective:
        model["init_args"]["objective"] = {"class_path": objective, "init_args": {"margin": 0.2}}
    return {
        "seed_everything": seed,
        "trainer": {"max_epochs": 3, "default_root_dir": out, "logger": {"init_args": {"save_dir": out}}},
        "model": model,
        "data": {"class_path": "leccr_lightning.data.datamodule.CCRDataModule",
                 "init_args": {"root": "/nowhere", "collection": "multi30k", "language": "de"}},
    }  # fmt: skip


def test_report_of_hand_written_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, r1 in zip((0, 1, 2), (10.0, 20.0, 30.0), strict=True):
        write_run(
            runs / f"base{seed}", retrieval_config(seed, out=f"runs/base{seed}"), {"t2v_r1": r1, "sumr": 100 + r1}
        )
    for seed, r1 in ((0, 40.0), (1, 44.0)):
        config = retrieval_config(seed, "leccr_lightning.methods.dcot.DCOTObjective", out=f"runs/dcot{seed}")
        write_run(runs / f"dcot{seed}", config, {"t2v_r1": r1, "sumr": 200 + r1})
    grounding = {
        "seed_everything": 3,
        "model": {"class_path": "leccr_lightning.methods.grounding.moment_detr.MomentDETR"},
        "data": {"class_path": "leccr_lightning.data.grounding.GroundingDataModule", "init_args": {"root": "/d/qvh"}},
    }
    write_run(runs / "grounding", grounding, {"MR-full-R1@0.3": 50.0, "MR-full-R1@0.5": 30.0, "MR-full-R1@0.7": 10.0})

    result = load_tool("report")([str(runs), "--out", str(tmp_path / "out")])
    rows = {row["setting"]: row for row in result["rows"]}
    assert set(rows) == {
        "DualEncoderBaseline / multi30k-de [objective=null]",
        "DualEncoderBaseline / multi30k-de [objective=DCOTObjective]",
        "MomentDETR / GroundingDataModule qvh",
    }
    base = rows["DualEncoderBaseline / multi30k-de [objective=null]"]
    assert base["seeds"] == [0, 1, 2]
    assert base["metrics"]["t2v_r1"] == {"mean": 20.0, "std": 10.0, "n": 3}
    dcot = rows["DualEncoderBaseline / multi30k-de [objective=DCOTObjective]"]["metrics"]["sumr"]
    assert dcot["mean"] == 242.0 and dcot["std"] == pytest.approx(np.sqrt(8.0))
    assert rows["MomentDETR / GroundingDataModule qvh"]["metrics"]["MR-full-R1@0.5"]["std"] is None
    assert result["keys"] == ["t2v_r1", "sumr", "MR-full-R1@0.5", "MR-full-R1@0.7"]

    printed = capsys.readouterr().out
    assert (
        "| DualEncoderBaseline / multi30k-de [objective=null] | 0,1,2 | 20.0 ± 10.0 | 120.0 ± 10.0 | — | — |" in printed
    )
    assert "| MomentDETR / GroundingDataModule qvh | 3 | — | — | 30.0 | 10.0 |" in printed
    assert (tmp_path / "out" / "report.md").read_text(encoding="utf-8").strip() in printed
    with (tmp_path / "out" / "report.csv").open(encoding="utf-8") as handle:
        table = {row["setting"]: row for row in csv.DictReader(handle)}
    assert float(table["DualEncoderBaseline / multi30k-de [objective=null]"]["t2v_r1_std"]) == 10.0
    assert table["MomentDETR / GroundingDataModule qvh"]["MR-full-R1@0.7_std"] == ""
    names = sorted(p.name for p in result["plots"])
    assert names == ["grounding_r1_iou.png", "recall_at_k.png", "sumr.png"]  # no ranks.json: no rank histogram


def test_report_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no test_metrics.json under"):
        main(["report", str(tmp_path)])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"run/test_metrics.json has no config.yaml"):
        main(["report", str(tmp_path)])


@pytest.fixture(scope="module")
def tiny_runs(synthetic_root, tmp_path_factory) -> Path:
    """Baseline and DCOT, seeds 0 and 1, 2 epochs on the 40%-noisy collection, with ranks and confidences; one
    Moment-DETR run on the synthetic grounding collection."""
    from leccr_lightning.data.grounding.synthetic import write_grounding_collection

    runs = tmp_path_factory.mktemp("report_runs")
    writers = [
        "--trainer.callbacks+=leccr_lightning.callbacks.ranks.RankWriter",
        "--trainer.callbacks+=leccr_lightning.callbacks.ranks.ConfidenceWriter",
    ]
    argv, sys.argv = sys.argv, ["leccr"]
    try:
        for method in ("baseline", "dcot"):
            for seed in (0, 1):
                extra = ["--trainer.max_epochs", "2", "--seed_everything", str(seed), "--test_after_fit", "true"]
                out = runs / f"{method}-{seed}"
                lightning_main(["fit", *cli_args(experiment(method), synthetic_root, out, *extra, *writers)])
        grounding = write_grounding_collection(runs.parent / "grounding_data", seed=0)
        extra = ["--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1", "--test_after_fit", "true"]
        lightning_main(["fit", *cli_args(experiment("moment_detr"), grounding, runs / "grounding", *extra)])
    finally:
        sys.argv = argv
    return runs


def test_report_of_tiny_runs_table_and_plots(tiny_runs, tmp_path, capsys):
    result = load_tool("report")([str(tiny_runs), "--out", str(tmp_path)])
    rows = {row["setting"]: row for row in result["rows"]}
    assert set(rows) == {
        "DualEncoderBaseline / synthetic-de (MT noise 0.4)",
        "DCOT / synthetic-de (MT noise 0.4)",
        "MomentDETR / GroundingDataModule grounding_data",
    }
    for method, label in (("baseline", "DualEncoderBaseline"), ("dcot", "DCOT")):
        row = rows[f"{label} / synthetic-de (MT noise 0.4)"]
        assert row["seeds"] == [0, 1]
        seeds = [json.loads(next((tiny_runs / f"{method}-{s}").rglob("test_metrics.json")).read_text()) for s in (0, 1)]
        for key in ("t2v_r1", "v2t_r10", "sumr"):
            values = [m[f"test/{key}"] for m in seeds]
            assert row["metrics"][key]["mean"] == pytest.approx(np.mean(values))
            assert row["metrics"][key]["std"] == pytest.approx(np.std(values, ddof=1))
        cell = f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"
        assert cell in capsys.readouterr().out or cell in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert rows["MomentDETR / GroundingDataModule grounding_data"]["metrics"]["MR-full-R1@0.5"]["n"] == 1

    names = sorted(p.name for p in result["plots"])
    assert names == [
        "dcot_confidence.png", "grounding_r1_iou.png", "rank_histogram.png", "recall_at_k.png", "sumr.png",
    ]  # fmt: skip
    for path in result["plots"]:
        image = imread(path)
        assert min(image.shape[:2]) >= 300 and image[..., :3].std() > 0.05, path

    # the confidence histogram splits the training captions by the collection's list of corrupted translations
    dcot_runs = [run for run in find_runs([tiny_runs]) if run.method == "DCOT"]
    manifest = dcot_runs[0].collection_manifest()
    noisy = corrupted_source_ids(dcot_runs[0])
    assert len(noisy) == len(manifest["noisy_translations"]) > 0
    assert noisy <= set(dcot_runs[0].confidences["confidences"])


def test_compare_tiny_trains_then_reports(synthetic_root, tmp_path, monkeypatch, capsys):
    """The comparison script is train-then-``leccr report``: one experiment, two seeds, one epoch."""
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(repo / "experiments"))
    monkeypatch.chdir(repo)
    import compare_tiny

    out = tmp_path / "compare"
    monkeypatch.setattr(
        sys, "argv",
        ["compare_tiny.py", "--experiments", "baseline", "--seeds", "0", "1", "--epochs", "1", "--n_train", "60",
         "--runs", str(out)],
    )  # fmt: skip
    compare_tiny.main()
    printed = capsys.readouterr().out
    assert "| DualEncoderBaseline / synthetic-de | 0,1 |" in printed
    assert sorted(p.name for p in (out / "report").glob("*.png")) == [
        "rank_histogram.png",
        "recall_at_k.png",
        "sumr.png",
    ]
    shutil.rmtree(out)
