"""A resumed run equals an uninterrupted one for every retrieval method (its tiny config, found by discovery):
fit 2 epochs straight, or stop after 1 epoch of the same 2-epoch run and resume from last.ckpt; the same weights and
validation SumR. The
grounding family has its own (tests/cli/grounding/test_resume.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leccr_lightning.tools.synth import write_for_experiment
from tests.helpers import retrieval_tiny_configs

pytestmark = pytest.mark.slow
SHORT = ("--data.init_args.batch_size", "8", "--trainer.limit_train_batches", "3", "--trainer.log_every_n_steps", "1")
TWO_EPOCHS = (*SHORT, "--trainer.max_epochs", "2")


@pytest.mark.parametrize("config", retrieval_tiny_configs(), ids=lambda path: path.parent.name)
def test_resumed_run_equals_uninterrupted_run(config: Path, tmp_path: Path, run_cli) -> None:
    sizes = {} if config.parent.name == "rivrl" else {"n_train": 24, "n_val": 6, "n_test": 6}
    root = tmp_path / "data"
    write_for_experiment(config, root, seed=3, **sizes)
    straight = run_cli("fit", config, root, tmp_path / "straight", *TWO_EPOCHS)
    interrupt = ("--trainer.callbacks+=tests.helpers.StopAfterEpochs", "--trainer.callbacks.epochs=1")
    first = run_cli("fit", config, root, tmp_path / "resumed", *TWO_EPOCHS, *interrupt)
    assert first.trainer.current_epoch == 1
    last = first.trainer.checkpoint_callback.last_model_path
    resumed = run_cli("fit", config, root, tmp_path / "resumed", *TWO_EPOCHS, "--ckpt_path", last)
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 2
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name
    assert float(resumed.trainer.callback_metrics["val/sumr"]) == pytest.approx(
        float(straight.trainer.callback_metrics["val/sumr"]), abs=1e-6
    )
