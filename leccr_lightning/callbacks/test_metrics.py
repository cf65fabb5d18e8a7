"""``test_metrics.json``: the test metrics of a run as a flat JSON dict, written by rank 0 of the processes that ran
the test (so every launcher, spawned and forked DDP included, writes it into the run's own log folder)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class TestMetricsWriter(L.Callback):
    """At the end of ``trainer.test``: every ``test/...`` metric into ``<log dir>/test_metrics.json``, and a printed
    table (rank 0; the log folder is agreed on by every rank first)."""

    def __init__(self, filename: str = "test_metrics.json"):
        self.filename = filename
        self.path: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a collective call: every rank takes part
        self.path = folder / self.filename
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(metrics, indent=1, sort_keys=True), encoding="utf-8")
        print(f"test metrics ({self.path}):")
        for key in sorted(metrics):
            print(f"  {key:<24} {metrics[key]:.4f}")
