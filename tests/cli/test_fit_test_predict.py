"""The `leccr` CLI end to end on the synthetic collection: synth, fit, test, predict; 1 vs 2 DDP processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leccr_lightning.cli import lightning_main, main
from tests.helpers import REPO, cli_args, experiment, written_test_metrics

TINY = experiment("baseline")


def run_args(root, out, *extra: str) -> list[str]:
    return cli_args(TINY, root, out, *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`leccr synth` then `leccr fit --test_after_fit true` on a small collection (module-scoped: trained once)."""
    base = tmp_path_factory.mktemp("cli")
    main(
        [
            "synth",
            "--out",
            str(base / "vs"),
            "--n_train",
            "150",
            "--n_val",
            "30",
            "--n_test",
            "31",
            "--seed",
            "2",
        ]
    )
    cli = lightning_main(
        [
            "fit",
            *run_args(base / "vs", base / "run", "--trainer.max_epochs", "12", "--test_after_fit", "true"),
        ]
    )
    return base, cli


def test_fit_then_test_writes_metrics_far_above_chance(trained):
    base, cli = trained
    metrics = json.loads(Path(cli.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    expected = {f"test/{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr", "map")}
    assert expected | {"test/sumr"} <= set(metrics)
    chance_r1 = 100 / 31
    assert metrics["test/t2v_r1"] > 4 * chance_r1
    assert metrics["test/t2v_sumr"] == pytest.approx(sum(metrics[f"test/t2v_r{k}"] for k in (1, 5, 10)), rel=1e-6)
    assert metrics["test/sumr"] == pytest.approx(
        sum(metrics[f"test/{d}_r{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)), rel=1e-6
    )
    assert cli.trainer.checkpoint_callback.best_model_path.endswith(".ckpt")


def test_test_and_predict_from_checkpoint(trained):
    base, cli = trained
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    fitted = json.loads(Path(cli.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    tested = lightning_main(["test", *run_args(base / "vs", base / "test"), "--ckpt_path", ckpt])
    again = json.loads(Path(tested.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    assert again == pytest.approx(fitted, abs=1e-9)
    predicted = lightning_main(["predict", *run_args(base / "vs", base / "predict"), "--ckpt_path", ckpt])
    lines = Path(predicted.trainer.log_dir, "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    queries = (base / "vs/synthetic/TextData/synthtest_de.caption.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(queries)
    first = json.loads(lines[0])
    assert first["query_id"] == queries[0].split()[0]
    assert len(first["gallery_ids"]) == 10 and first["scores"] == sorted(first["scores"], reverse=True)
    with_faiss = lightning_main(
        [
            "predict",
            *run_args(base / "vs", base / "predict_faiss"),
            "--ckpt_path",
            ckpt,
            "--trainer.callbacks+=leccr_lightning.callbacks.retrieval_writer.RetrievalPredictionWriter",
            "--trainer.callbacks.backend=faiss",
        ]
    )
    writers = [c for c in with_faiss.trainer.callbacks if type(c).__name__ == "RetrievalPredictionWriter"]
    assert [w.backend for w in writers] == ["faiss"]
    faiss_lines = Path(with_faiss.trainer.log_dir, "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["gallery_ids"][:3] for x in faiss_lines] == [json.loads(x)["gallery_ids"][:3] for x in lines]


@pytest.mark.ddp
def test_one_and_two_ddp_processes_give_identical_metrics(trained):
    """The same checkpoint tested with 1 process and with 2 CPU processes (ddp_fork, gloo): identical numbers,
    although 31 gallery items and the query count force DistributedSampler padding."""
    base, cli = trained
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    single = lightning_main(["test", *run_args(base / "vs", base / "t1"), "--ckpt_path", ckpt])
    double = lightning_main(
        [
            "test",
            *run_args(base / "vs", base / "t2"),
            "--ckpt_path",
            ckpt,
            "--trainer.strategy",
            "ddp_fork",
            "--trainer.devices",
            "2",
        ]
    )
    assert double.trainer.world_size == 2 and single.trainer.world_size == 1
    one = json.loads(Path(single.trainer.log_dir, "test_metrics.json").read_text(encoding="utf-8"))
    two = written_test_metrics(base / "t2")  # written by rank 0 of the forked processes, beside their own logs
    assert (next((base / "t2").rglob("test_metrics.json")).parent / "metrics.csv").is_file()
    assert one.keys() == two.keys()
    assert one == pytest.approx(two, abs=1e-9)


def test_missing_collection_error_says_how_to_make_one(tmp_path):
    with pytest.raises(Exception, match=r"nowhere/synthetic does not exist \(`leccr synth --config") as info:
        lightning_main(["fit", *run_args(tmp_path / "nowhere", tmp_path / "run")])
    assert isinstance(info.value, FileNotFoundError | ValueError)


def test_resume_from_last_checkpoint_matches_uninterrupted_run(trained, tmp_path):
    """fit 4 epochs == fit 2 epochs, then resume from last.ckpt to 4 (same weights, same validation SumR)."""
    base, _ = trained
    straight = lightning_main(["fit", *run_args(base / "vs", tmp_path / "straight", "--trainer.max_epochs", "4")])
    first = lightning_main(["fit", *run_args(base / "vs", tmp_path / "resumed", "--trainer.max_epochs", "2")])
    last = first.trainer.checkpoint_callback.last_model_path
    resumed = lightning_main(
        ["fit", *run_args(base / "vs", tmp_path / "resumed", "--trainer.max_epochs", "4"), "--ckpt_path", last]
    )
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert float(resumed.trainer.callback_metrics["val/sumr"]) == pytest.approx(
        float(straight.trainer.callback_metrics["val/sumr"]), abs=1e-6
    )


def test_bf16_mixed_recipe_trains_and_scores_in_fp32(trained, tmp_path, monkeypatch):
    from leccr_lightning.metrics import RetrievalMetric

    base, _ = trained
    dtypes, update = set(), RetrievalMetric.update

    def recording_update(self, role, positions, views, targets=None):
        dtypes.update(view.dtype for view in views.values())
        return update(self, role, positions, views, targets)

    monkeypatch.setattr(RetrievalMetric, "update", recording_update)
    bf16 = str(REPO / "configs/trainer/bf16.yaml")
    cli = lightning_main(["fit", *run_args(base / "vs", tmp_path, "--config", bf16, "--trainer.max_epochs", "1")])
    assert cli.trainer.precision == "bf16-mixed" and dtypes == {torch.float32}
    assert torch.isfinite(cli.trainer.callback_metrics["val/sumr"])
