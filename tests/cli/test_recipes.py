"""Every CCR recipe (baseline, NRCCR, CL2CM, DCOT) for the real data loads and trains one step on a synthetic
collection written with the real file names (tiny text model and trained tokenizer instead of mBERT, which is not on
this machine)."""

from __future__ import annotations

import pytest

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from tests.helpers import CONFIGS, EXPERIMENTS

LAYOUT_OF = {
    "multi30k": ("multi30k", ["de", "fr", "cs"]),
    "multi30k_task1": ("multi30k_task1", ["de", "fr", "cs"]),
    "mscoco": ("mscoco", ["ja", "zh"]),
    "vatex": ("vatex", ["zh"]),
    "msrvtt10kcn": ("msrvtt10kcn", ["zh"]),
}
CCR_METHODS = ("baseline", "nrccr", "cl2cm", "dcot")
REAL_CCR_DATASETS = sorted(
    path.stem
    for path in (CONFIGS / "data").glob("*.yaml")
    if "CCRDataModule" in path.read_text(encoding="utf-8") and path.stem.rsplit("_", 1)[0] in LAYOUT_OF
)
RECIPES = sorted(
    path for method in CCR_METHODS for path in (EXPERIMENTS / method).glob("*.yaml") if path.stem in REAL_CCR_DATASETS
)


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


def test_every_ccr_method_has_a_recipe_for_every_real_data_preset():
    assert len(REAL_CCR_DATASETS) >= 10, REAL_CCR_DATASETS
    for method in CCR_METHODS:
        missing = [name for name in REAL_CCR_DATASETS if not (EXPERIMENTS / method / f"{name}.yaml").is_file()]
        assert not missing, f"configs/experiments/{method}/ lacks recipes for the data presets {missing}"


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
