"""Every RIVRL paper recipe (and its BERT variant) and the CCR recipe with the RIVRL video encoder load and train one
step on synthetic collections written under the real file names (the model sizes of the recipes; only the concept
width follows the synthetic tag vocabulary, and the CCR recipe uses a tiny text model instead of mBERT)."""

from __future__ import annotations

import json

import pytest

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from tests.helpers import EXPERIMENTS, cli_args

CONFIGS = EXPERIMENTS.parent
LAYOUT_OF = {"vatex": "vatex_en"}
RECIPES = sorted(p for p in (EXPERIMENTS / "rivrl").glob("*.yaml") if not p.stem.startswith("tiny"))
BERT = {"msrvtt10kyu": "rivrl_bert_msrvtt.yaml", "tgif_li": "rivrl_bert.yaml"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    made = {}

    def root(collection: str):
        if collection not in made:
            made[collection] = tmp_path_factory.mktemp(collection)
            layout = LAYOUT_OF.get(collection, collection)
            config = SynthConfig(layout=layout, n_train=24, n_val=6, n_test=6, captions_per_item=(3, 5), seed=4)
            write_synthetic_collection(made[collection], config)
        return made[collection]

    return root


def one_step(config, root, out, *extra: str):
    args = cli_args(
        config,
        root,
        out,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.batch_size",
        "16",
        *extra,
    )
    return lightning_main(["fit", *args])


def test_every_rivrl_data_preset_has_a_paper_recipe():
    presets = {p.stem for p in (CONFIGS / "data").glob("*.yaml") if "VideoTextDataModule" in p.read_text()}
    assert {p.stem for p in RECIPES} == presets - {"synthvideo"}
    assert len(RECIPES) == 6


@pytest.mark.parametrize(
    ("recipe", "bert"),
    [(p, None) for p in RECIPES] + [(EXPERIMENTS / "rivrl" / f"{c}.yaml", f) for c, f in BERT.items()],
    ids=lambda v: getattr(v, "stem", v or "plain"),
)
def test_rivrl_recipe_trains_one_step(recipe, bert, roots, tmp_path):
    collection = recipe.stem
    root = roots(collection)
    vocabulary = root / collection / "TextData/tags/video_label_th_1/tag_vocab_512.json"
    extra = ["--model.init_args.concept_dim", str(len(json.loads(vocabulary.read_text())))]
    if bert:
        extra += ["--config", str(CONFIGS / "fragments" / bert)]
    cli = one_step(recipe, root, tmp_path, *extra)
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert "val/sumr" in cli.trainer.callback_metrics
    assert cli.model.hparams.intensive_dim == 2048 and cli.model.hparams.latent_dim == 1024
    assert cli.model.hparams.sentence_dim == (1024 if bert else 0)


def test_the_ccr_recipe_with_the_rivrl_video_encoder_trains_one_step(tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("vatex_zh")
    write_synthetic_collection(root, SynthConfig(layout="vatex", languages=["zh"], n_train=24, n_val=6, n_test=6))
    cli = one_step(
        EXPERIMENTS / "baseline" / "vatex_zh_rivrl.yaml",
        root,
        tmp_path,
        "--data.init_args.tokenizer",
        "train",
        "--model.init_args.text_model",
        "tiny",
        "--model.init_args.trainable_layers",
        "null",
    )
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert type(cli.model.encoder.visual).__name__ == "PreviewIntensiveEncoder"
    assert cli.model.encoder.visual.out_dim == 1024 + 2 * 2048
