"""Per-epoch statistics and histograms of per-pair confidences (DCOT's objective records them in training)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightning as L
import torch
from torch import Tensor


@runtime_checkable
class RecordsConfidences(Protocol):
    """A module that records (caption id, confidence) pairs in training (``DCOTObjective``)."""

    view_weight: float

    def pop_recorded(self) -> dict[str, float]:
        """caption id -> confidence recorded since the last call, then cleared."""
        ...


class ConfidenceLogger(L.Callback):
    """Each training epoch: summary statistics of the recorded confidences (mean, std, min, quantiles, curriculum
    lambda) to the logger, and a histogram where the logger's experiment supports one (W&B ``log``,
    TensorBoard ``add_histogram``; CSV cannot).
    The epoch's caption id -> confidence map is kept in ``last_epoch``."""

    def __init__(self, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)):
        self.quantiles = tuple(quantiles)
        self.last_epoch: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        objectives = [m for m in pl_module.modules() if isinstance(m, RecordsConfidences)]
        if not objectives:
            return
        self.last_epoch = {}
        for objective in objectives:
            self.last_epoch.update(objective.pop_recorded())
        if not self.last_epoch:
            return
        values = torch.tensor(list(self.last_epoch.values()))
        stats = {
            "mean": values.mean(),
            "std": values.std(unbiased=False),
            "min": values.min(),
            "lambda": torch.tensor(objectives[0].view_weight),
        }
        for q in self.quantiles:
            stats[f"q{round(100 * q)}"] = values.quantile(q)
        for name, value in stats.items():
            pl_module.log(f"train/confidence_{name}", float(value), on_epoch=True)
        self._histogram(trainer, values)

    def _histogram(self, trainer: L.Trainer, values: Tensor) -> None:
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram"):
                experiment.add_histogram("train/confidence", values, trainer.current_epoch)
            elif type(logger).__name__ == "WandbLogger":
                import wandb

                experiment.log({"train/confidence": wandb.Histogram(values.numpy()), "epoch": trainer.current_epoch})
