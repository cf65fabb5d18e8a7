"""ViSERN and ProTA end to end: the tiny recipes learn on the synthetic video collection, every paper recipe trains
one step on a synthetic collection written under its preset's names (tiny CLIP, trained tokenizer), ProTA's chunked
test-time scorer equals the unchunked scores, and its memory at the MSR-VTT 1k-A shape stays far below the
materialised token-pair tensor."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.prota_scoring_memory import token_views
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.video.paragraphs import write_paragraph_captions
from leccr_lightning.methods.prota import ProTAScorer, probabilistic_token_scores
from tests.helpers import CONFIGS, EXPERIMENTS, REPO, assert_consistent_report, experiment, written_test_metrics

VIDEO_EXTRAS = {"video": True, "regions": True, "frame_tokens": True}


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    """The collection of the tiny recipes (``leccr synth --video true --regions true --frame_tokens true``)."""
    root = tmp_path_factory.mktemp("video")
    write_synthetic_collection(root, SynthConfig(**VIDEO_EXTRAS))
    return root


@pytest.mark.parametrize("method", ["visern", "prota"])
def test_tiny_recipe_learns(method, video_root, tmp_path, run_cli):
    run_cli("fit", experiment(method), video_root, tmp_path, "--test_after_fit", "true")
    metrics = written_test_metrics(tmp_path)
    assert_consistent_report(metrics)
    assert metrics["test/t2v_r1"] >= 20.0 and metrics["test/sumr"] >= 150.0, metrics


def renamed_collection(root: Path, preset: Path) -> Path:
    """A synthetic video collection with every extra, laid out under the collection and caption names of ``preset``
    (DiDeMo's captions turned into paragraphs)."""
    data = yaml.safe_load(preset.read_text(encoding="utf-8"))["init_args"]
    write_synthetic_collection(
        root, SynthConfig(**VIDEO_EXTRAS, frame_images=True, image_size=32, n_train=16, n_val=4, n_test=4, seed=6)
    )
    folder = root / data["collection"]
    (root / "synthetic").rename(folder)
    shutil.move(folder / "FeatureData/synthetic_feat", folder / data["features"]["path"])
    stand_in = yaml.safe_load((CONFIGS / "data/synthetic_video_tiny.yaml").read_text(encoding="utf-8"))["init_args"]
    for split in ("train", "val", "test"):
        for role, name in data[f"{split}_captions"].items():
            path = folder / "TextData" / name
            (folder / "TextData" / stand_in[f"{split}_captions"][role]).rename(path)
            if data["collection"] == "didemo":
                write_paragraph_captions(path, path)
    return root


PAPER_RECIPES = sorted(p for method in ("visern", "prota") for p in (EXPERIMENTS / method).glob("[!t]*.yaml"))


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_paper_recipe_trains_one_step(recipe, tmp_path, run_cli):
    data_preset = recipe.parent / yaml.safe_load(recipe.read_text(encoding="utf-8"))["data"]
    root = renamed_collection(tmp_path / "data", data_preset.resolve())
    small = ["--data.init_args.tokenizer", "train", "--data.init_args.tokenizer_vocab_size", "300"]
    small += ["--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8"]
    if recipe.parent.name == "visern":
        model = ["--model.init_args.region_dim", "32", "--model.init_args.region_width", "128"]
        model += ["--model.init_args.video_gru_hidden", "64", "--model.init_args.embed_dim", "128"]
    else:
        model = ["--model.init_args.clip_model", "tiny", "--model.init_args.clip_projection_dim", "32"]
        if "end_to_end" in recipe.stem:
            small += ["--data.init_args.extras.frames.init_args.image_size", "32"]
    trainer = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
    trainer += ["--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"]
    cli = run_cli("fit", str(recipe), root, tmp_path / "run", *small, *model, *trainer)
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert "val/sumr" in cli.trainer.callback_metrics


@pytest.mark.parametrize("block", [1, 37, 500, 10**9])
def test_chunked_prota_scores_equal_the_unchunked_ones(block):
    queries, gallery = token_views(9, 5, 8, seed=0), token_views(7, 4, 8, seed=1)
    options = (10.0, (0.5, 1.0, 2.0), 1.0)
    expected = probabilistic_token_scores(
        queries["mean"], queries["std"], queries["mask"].bool(), gallery["mean"], gallery["std"],
        gallery["mask"].bool(), *options,
    )  # fmt: skip
    assert torch.allclose(ProTAScorer(*options, block_elements=block)(queries, gallery), expected, atol=1e-6)


def test_prota_test_time_scoring_memory_is_bounded_by_the_block_not_by_the_token_pair_tensor():
    """A fifth of the MSR-VTT 1k-A shape (1,000 texts x 200 videos x 32 tokens x 12 frames, 77M token pairs; the full
    shape is measured by ``benchmarks/prota_scoring_memory.py``): with blocks of 2^20 pairs the peak resident memory
    grows by far less than one materialised fp32 intermediate."""
    command = [sys.executable, "benchmarks/prota_scoring_memory.py", "--videos", "200", "--dim", "16", "--block"]
    done = subprocess.run([*command, str(2**20)], cwd=REPO, capture_output=True, text=True, check=True)
    ratio = float(done.stdout.split("(ratio ")[1].split(")")[0])
    assert ratio < 0.5, done.stdout
