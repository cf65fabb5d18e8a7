"""Shared test helpers: repository paths, the synthetic DataModule arguments, and CLI argument lists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS = CONFIGS / "experiments"


def experiment(method: str, name: str = "tiny") -> str:
    """Path of ``configs/experiments/<method>/<name>.yaml`` (absolute, so tests do not depend on the cwd)."""
    path = EXPERIMENTS / method / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no experiment config {path}")
    return str(path)


def cli_args(config: str, root: Path | str | None, out: Path | str, *extra: str) -> list[str]:
    """``--config config --data.init_args.root root`` with the run's log and checkpoint folders under ``out``."""
    args = ["--config", str(config)]
    if root is not None:
        args += ["--data.init_args.root", str(root)]
    args += ["--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out)]
    return [*args, *extra]


def written_test_metrics(out: Path | str) -> dict[str, float]:
    """The ``test_metrics.json`` a run under ``out`` wrote (exactly one must exist)."""
    found = sorted(Path(out).rglob("test_metrics.json"))
    if len(found) != 1:
        raise AssertionError(f"expected one test_metrics.json under {out}, found {[str(p) for p in found]}")
    return json.loads(found[0].read_text(encoding="utf-8"))


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


def assert_consistent_report(metrics: dict[str, float], stage: str = "test", ks: tuple[int, ...] = (1, 5, 10)) -> None:
    """A retrieval report's internal consistency: every key present, recalls in [0, 100] and non-decreasing in K,
    MedR/MeanR >= 1, mAP in [0, 100], ``sumr`` and ``t2v_sumr`` the sums of their recalls."""
    for direction in ("t2v", "v2t"):
        recalls = [metrics[f"{stage}/{direction}_r{k}"] for k in ks]
        assert all(0.0 <= r <= 100.0 for r in recalls), recalls
        assert recalls == sorted(recalls), f"{direction} recalls decrease with K: {recalls}"
        assert metrics[f"{stage}/{direction}_medr"] >= 1.0 and metrics[f"{stage}/{direction}_meanr"] >= 1.0
        assert 0.0 <= metrics[f"{stage}/{direction}_map"] <= 100.0
    t2v = sum(metrics[f"{stage}/t2v_r{k}"] for k in ks)
    total = t2v + sum(metrics[f"{stage}/v2t_r{k}"] for k in ks)
    # the logger stores float32: compare to 1e-6 relative
    assert math.isclose(metrics[f"{stage}/t2v_sumr"], t2v, rel_tol=1e-6, abs_tol=1e-6), (metrics, t2v)
    assert math.isclose(metrics[f"{stage}/sumr"], total, rel_tol=1e-6, abs_tol=1e-6), (metrics, total)


def resolved_config(config: str | Path, *extra: str) -> dict:
    """The config ``leccr fit --config config ... --print_config`` resolves to (includes, presets and overrides
    applied), as a dict; nothing is instantiated or trained."""
    import contextlib
    import io

    import yaml

    from leccr_lightning.cli import lightning_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        lightning_main(["fit", "--config", str(config), *extra, "--print_config"])
    resolved = yaml.safe_load(printed.getvalue())
    if not isinstance(resolved, dict):
        raise AssertionError(f"--print_config of {config} printed no config: {printed.getvalue()[:500]!r}")
    return resolved


def dotted(config: dict, key: str):
    """``config["a"]["b"]...`` for the dotted ``key`` ``a.b...``. A list item is chosen by index (``callbacks.0``) or
    by the class name ending its ``class_path`` (``trainer.callbacks.ModelCheckpoint.init_args.monitor``)."""
    node = config
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)]
        elif isinstance(node, list):
            matches = [item for item in node if str(item.get("class_path", "")).rsplit(".", 1)[-1] == part]
            if len(matches) != 1:
                raise KeyError(f"{key!r}: {len(matches)} list items of class {part!r}")
            node = matches[0]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"{key!r}: no {part!r} in {sorted(node) if isinstance(node, dict) else type(node)}")
    return node


def pair_context(scores, positives, rows: str = "target", columns: str = "visual", **fields):
    """A ``PairContext`` for objective tests: the index defaults to one item per row, progress to 1, no batch."""
    import torch

    from leccr_lightning.methods.objectives import PairContext

    defaults = {
        "embeddings": {},
        "index": torch.arange(scores.shape[0]),
        "progress": 1.0,
        "batch": {},
    }
    return PairContext(scores=scores, positives=positives, rows=rows, columns=columns, **{**defaults, **fields})


def instantiate(config: str | Path, root: Path | str, *extra: str):
    """The model and DataModule a config builds on the data under ``root`` (nothing is trained)."""
    from leccr_lightning.cli import lightning_main

    cli = lightning_main(["--config", str(config), "--data.init_args.root", str(root), *extra], run=False)
    return cli.model, cli.datamodule


def retrieval_tiny_configs() -> list[Path]:
    """Every ``configs/experiments/<method>/tiny.yaml`` whose model is a ``RetrievalMethod`` (found by discovery)."""
    import importlib

    import yaml

    from leccr_lightning.methods.base import RetrievalMethod

    configs = []
    for path in sorted(EXPERIMENTS.glob("*/tiny.yaml")):
        model = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
        if isinstance(model, str):
            model = yaml.safe_load((path.parent / model).read_text(encoding="utf-8"))
        module, name = model["class_path"].rsplit(".", 1)
        if issubclass(getattr(importlib.import_module(module), name), RetrievalMethod):
            configs.append(path)
    return configs


class StopAfterEpochs(L.Callback):
    """Interrupts a run after ``epochs`` epochs (as a crash would), keeping its schedule length (``max_epochs``, which
    progress-based schedules and curricula read)."""

    def __init__(self, epochs: int = 2):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
