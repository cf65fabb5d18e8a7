"""Every CCR recipe (baseline, NRCCR, CL2CM, DCOT) for the real data loads and trains one step on a synthetic
collection written with the real file names (tiny text model and trained tokenizer instead of mBERT, which is not on
this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

LAYOUT_OF = {
    "multi30k": ("multi30k", ["de", "fr", "cs"]),
    "multi30k_task1": ("multi30k_task1", ["de", "fr", "cs"]),
    "mscoco": ("mscoco", ["ja", "zh"]),
    "vatex": ("vatex", ["zh"]),
    "msrvtt10kcn": ("msrvtt10kcn", ["zh"]),
}
DATASETS = (
    "multi30k_de",
    "multi30k_fr",
    "multi30k_cs",
    "multi30k_task1_de",
    "multi30k_task1_fr",
    "multi30k_task1_cs",
    "mscoco_ja",
    "mscoco_zh",
    "vatex_zh",
    "msrvtt10kcn_zh",
)
CCR_METHODS = ("baseline", "nrccr", "cl2cm", "dcot")
RECIPES = [Path(f"configs/experiments/{method}/{dataset}.yaml") for method in CCR_METHODS for dataset in DATASETS]


@pytest.fixture(scope="module")
def real_name_roots(tmp_path_factory):
    roots = {}
    for key, (layout, languages) in LAYOUT_OF.items():
        root = tmp_path_factory.mktemp(key)
        write_synthetic_collection(
            root, SynthConfig(layout=layout, languages=languages, n_train=24, n_val=6, n_test=6, seed=4)
        )
        roots[key] = root
    return roots


def test_every_real_dataset_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {
        "multi30k_de",
        "multi30k_fr",
        "multi30k_cs",
        "mscoco_ja",
        "mscoco_zh",
        "vatex_zh",
        "msrvtt10kcn_zh",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_recipe_trains_one_step(recipe, real_name_roots, tmp_path):
    key = recipe.stem.rsplit("_", 1)[0]
    cli = lightning_main(
        [
            "fit",
            "--config",
            str(recipe),
            "--data.init_args.root",
            str(real_name_roots[key]),
            "--data.init_args.tokenizer",
            "train",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.batch_size",
            "16",
            "--model.init_args.text_model",
            "tiny",
            "--model.init_args.trainable_layers",
            "null",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert "val/sumr" in cli.trainer.callback_metrics
