"""Every grounding paper recipe (found by glob) composes its presets, fragment and trainer, builds its model and
data, and trains one step and validates on a synthetic collection (the real-data paths and the real sizes
overridden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leccr_lightning.data.grounding.synthetic import write_grounding_collection
from tests.helpers import EXPERIMENTS

METHODS = ("moment_detr", "qd_detr", "rgtr", "cdnet")
RECIPES = sorted(p for m in METHODS for p in (EXPERIMENTS / m).glob("*.yaml") if not p.stem.startswith("tiny"))
SYNTHETIC_LAYOUT = [
    "--data.init_args.train_file=annotations/highlight_train_release.jsonl",
    "--data.init_args.val_file=annotations/highlight_val_release.jsonl",
    "--data.init_args.test_file=annotations/highlight_test_release.jsonl",
    "--data.init_args.video_feature_dirs=[features/video_a, features/video_b]",
    "--data.init_args.text_feature_dir=features/text",
    "--data.init_args.text_file_template=qid{qid}",
    "--data.init_args.batch_size=8",
]
TINY_MODEL = [
    "--model.init_args.text_dim=16",
    "--model.init_args.hidden_dim=32",
    "--model.init_args.nheads=4",
    "--model.init_args.dim_feedforward=64",
]
ONE_STEP = [
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grounding_collection(tmp_path_factory.mktemp("grecipes"), seed=2, n_queries=(32, 8, 8))


def test_every_method_has_its_three_recipes() -> None:
    assert {(p.parent.name, p.stem) for p in RECIPES} == {
        (m, d) for m in METHODS for d in ("qvhighlights", "charades_sta", "tacos")
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_recipe_trains_one_step(recipe: Path, collection: Path, tmp_path: Path, run_cli) -> None:
    cli = run_cli("fit", str(recipe), collection, tmp_path, *SYNTHETIC_LAYOUT, *TINY_MODEL, *ONE_STEP)
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    monitor = cli.trainer.checkpoint_callback.monitor
    assert monitor in cli.trainer.callback_metrics, (monitor, sorted(cli.trainer.callback_metrics))
    assert cli.datamodule.hparams.span_normaliser == "features" and cli.model.hparams.saliency_fp16
