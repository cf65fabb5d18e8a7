"""Shared test set-up: one torch thread, no network, no stray process groups; the real-data, synthetic-collection and
CLI fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_leftover_process_group():
    """Destroy any process group a DDP test left behind, so the next test starts clean."""
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder beside the checkout (`../shared/data`); tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic image collection (German target, 40% noisy MT), written once per test session."""
    from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

    root = tmp_path_factory.mktemp("visualsearch")
    write_synthetic_collection(root, SynthConfig(n_train=120, n_val=31, n_test=31, mt_noise=0.4, seed=1))
    return root


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Callable:
    """In-process ``leccr <subcommand>``: ``run_cli("fit", config, root, out, *extra)`` returns the ``LeccrCLI``.

    ``root`` is the data root (``None`` keeps the config's), ``out`` holds the logs and checkpoints of the run.
    """
    from leccr_lightning.cli import lightning_main
    from tests.helpers import cli_args

    monkeypatch.setattr(sys, "argv", ["leccr"])

    def run(subcommand: str, config: str, root: Path | str | None, out: Path | str, *extra: str):
        return lightning_main([subcommand, *cli_args(config, root, out, *extra)])

    return run
