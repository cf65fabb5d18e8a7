"""Learning-rate schedules: a per-step warm-up schedule from transformers, and the NRCCR/RIVRL epoch rule on the
validation metric as a Lightning callback (ccr_methods §2.3)."""

from __future__ import annotations

import lightning as L
import torch
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


class DecayAndHalveOnPlateau(L.Callback):
    """An epoch learning-rate rule read off the validation metric (NRCCR and RIVRL; ccr_methods §2.3).

    After every validation: lr *= ``decay`` (0.99); also lr *= ``halve_factor`` (0.5) when the validation did not
    improve ``monitor`` and at least ``halve_every`` (3) validations passed since the last halving (or since the
    start). This is LiJiaBei-7/nrccr:trainer_img.py:191-199 (``lr_counter``: +1 per epoch, halve when the epoch is not
    the best and the counter exceeds 2, then reset), so the first halving can come at the third validation.
    "Improve" is strictly better than the best value so far (``mode`` ``max`` or ``min``). It runs in
    ``on_validation_end``, once the epoch's metrics are logged, and acts on optimiser ``optimizer_index`` (0: the main
    one, not NRCCR's discriminator). Pair it with ``lightning.pytorch.callbacks.EarlyStopping(patience=11)`` for the
    official stop after more than 10 epochs without improvement (trainer_img.py:201-208).
    """

    def __init__(
        self,
        monitor: str = "val/sumr",
        mode: str = "max",
        decay: float = 0.99,
        halve_factor: float = 0.5,
        halve_every: int = 3,
        optimizer_index: int = 0,
    ):
        if not 0 < decay <= 1 or not 0 < halve_factor <= 1:
            raise ValueError(f"decay {decay} and halve_factor {halve_factor} must lie in (0, 1]")
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        if halve_every < 1:
            raise ValueError(f"halve_every: expected at least 1 validation, got {halve_every}")
        self.monitor, self.mode, self.decay, self.halve_factor = monitor, mode, decay, halve_factor
        self.halve_every, self.optimizer_index = halve_every, optimizer_index
        self.best: float | None = None
        self.since_halving = 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _scale(self, trainer: L.Trainer, factor: float) -> None:
        for group in trainer.optimizers[self.optimizer_index].param_groups:
            group["lr"] *= factor

    def step(self, trainer: L.Trainer, value: float) -> None:
        """Apply the rule for one validation result ``value``."""
        self.since_halving += 1
        self._scale(trainer, self.decay)
        if self._improved(value):
            self.best = value
        elif self.since_halving >= self.halve_every:
            self._scale(trainer, self.halve_factor)
            self.since_halving = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(
                f"DecayAndHalveOnPlateau monitors {self.monitor!r}, which the validation did not log; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        self.step(trainer, float(trainer.callback_metrics[self.monitor]))

    def state_dict(self) -> dict:
        return {"best": self.best, "since_halving": self.since_halving}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.since_halving = state_dict["best"], state_dict["since_halving"]
