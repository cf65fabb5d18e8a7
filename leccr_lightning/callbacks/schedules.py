"""Learning-rate schedules: a per-step warm-up schedule from transformers, and NRCCR's epoch rule and early stopping
as Lightning callbacks (ccr_methods §2.3)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from transformers import get_scheduler


class WarmupSchedule(torch.optim.lr_scheduler.LambdaLR):
    """``transformers.get_scheduler(name)`` with the warm-up given as a fraction of the run (LECCR §3.4: ``linear``,
    10 %: lr = base * s/W for s < W, then base * (T - s)/(T - W), W = warmup_fraction * T; use with
    ``scheduler_interval: step``).

    ``num_training_steps=None`` (the usual config) lets ``MethodBase`` fill in the trainer's estimated number of
    optimiser steps when it builds the optimiser.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        name: str = "linear",
        warmup_fraction: float = 0.1,
        num_training_steps: int | None = None,
        last_epoch: int = -1,
    ):
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction: expected a value in [0, 1), got {warmup_fraction}")
        if num_training_steps is None or num_training_steps < 1:
            raise ValueError(
                f"num_training_steps: expected at least 1 step, got {num_training_steps} (a method fills it from the "
                "trainer; set it when building the schedule by hand)"
            )
        self.name, self.warmup_fraction, self.num_training_steps = name, warmup_fraction, num_training_steps
        warmup = int(warmup_fraction * num_training_steps)
        reference = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=num_training_steps)
        super().__init__(optimizer, reference.lr_lambdas, last_epoch)


class NRCCRLearningRate(L.Callback):
    """After every validation: lr *= ``decay`` (0.99); also lr *= ``halve_factor`` (0.5) when the epoch did
    not improve ``monitor`` and at least ``halve_every`` (3) epochs passed since the last halving.

    Acts on the optimiser ``optimizer_index`` (0: NRCCR's main optimiser, not the discriminator's).
    """

    def __init__(
        self,
        monitor: str = "val/sumr",
        decay: float = 0.99,
        halve_factor: float = 0.5,
        halve_every: int = 3,
        optimizer_index: int = 0,
    ):
        if not 0 < decay <= 1 or not 0 < halve_factor <= 1:
            raise ValueError(f"decay {decay} and halve_factor {halve_factor} must lie in (0, 1]")
        self.monitor, self.decay, self.halve_factor = monitor, decay, halve_factor
        self.halve_every, self.optimizer_index = halve_every, optimizer_index
        self.best: float | None = None
        self.last_halving = 0

    def _scale(self, trainer: L.Trainer, factor: float) -> None:
        for group in trainer.optimizers[self.optimizer_index].param_groups:
            group["lr"] *= factor

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        if self.best is None or value > self.best:
            self.best = value
        elif epoch - self.last_halving >= self.halve_every:
            self._scale(trainer, self.halve_factor)
            self.last_halving = epoch
        self._scale(trainer, self.decay)

    def state_dict(self) -> dict:
        return {"best": self.best, "last_halving": self.last_halving}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.last_halving = state_dict["best"], state_dict["last_halving"]


class NRCCREarlyStopping(EarlyStopping):
    """Stop after more than ``patience - 1`` = 10 non-improving validations (NRCCR: count > 10)."""

    def __init__(self, monitor: str = "val/sumr", patience: int = 11, mode: str = "max", **kwargs):
        super().__init__(monitor=monitor, patience=patience, mode=mode, **kwargs)
