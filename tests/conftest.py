"""Shared test set-up: one torch thread, no network, no stray process groups."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

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


def tiny_datamodule_kwargs(root: Path, **overrides) -> dict:
    """CCRDataModule arguments for the synthetic layout (German)."""
    from leccr_lightning.data.datamodule import FeatureSpec

    kwargs = dict(
        root=str(root),
        collection="synthetic",
        language="de",
        train_captions={
            "source": "synthtrain_enc.caption.txt",
            "target": "synthtrain_google_enc2de.caption.txt",
            "back": "synthtrain_google_enc2de2enc.caption.txt",
        },
        val_captions={"query": "synthval_de.caption.txt", "translated": "synthval_google_de2enc.caption.txt"},
        test_captions={
            "query": "synthtest_de.caption.txt",
            "translated": "synthtest_google_de2enc.caption.txt",
        },
        features=FeatureSpec(path="FeatureData/synthetic_feat"),
        id_lists={
            "train": "FeatureData/train_id.txt",
            "val": "FeatureData/val_id.txt",
            "test": "FeatureData/test_id.txt",
        },
        descriptions="descriptions",
        tokenizer_vocab_size=500,
        batch_size=16,
        eval_batch_size=16,
    )
    kwargs.update(overrides)
    return kwargs
