"""A resumed grounding run equals an uninterrupted one: MethodBase's RNG states in the checkpoint (dropout, the
shuffle), the per-(seed, epoch, query) training draws of the DataModule, and RGTR's clustered anchors restored from
the checkpoint instead of clustered again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leccr_lightning.data.grounding.synthetic import write_grounding_collection
from tests.helpers import experiment


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grounding_collection(tmp_path_factory.mktemp("gresume"), seed=1, n_queries=(96, 16, 16))


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted_run(collection: Path, tmp_path: Path, run_cli) -> None:
    """fit 4 epochs == fit 2 epochs, then resume from last.ckpt to 4 (same weights, same validation metrics)."""
    config = experiment("rgtr")
    schedule = ["--trainer.check_val_every_n_epoch", "1", "--data.init_args.batch_size", "16"]
    straight = run_cli("fit", config, collection, tmp_path / "straight", "--trainer.max_epochs", "4", *schedule)
    first = run_cli("fit", config, collection, tmp_path / "resumed", "--trainer.max_epochs", "2", *schedule)
    last = first.trainer.checkpoint_callback.last_model_path
    resumed = run_cli(
        "fit", config, collection, tmp_path / "resumed", "--trainer.max_epochs", "4", *schedule, "--ckpt_path", last
    )
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    assert torch.equal(resumed.model.static_anchors, first.model.static_anchors)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    for key in ("val/MR-full-mAP", "val/MR-full-R1@0.5", "val/HL-min-VeryGood-mAP"):
        assert float(resumed.trainer.callback_metrics[key]) == float(straight.trainer.callback_metrics[key]), key
