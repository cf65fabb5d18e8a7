"""Loggers: W&B with one folder per run, the monitored metrics summarised as their best value, the resolved config
in the run config."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

RUN_ID_VARIABLE = "LECCR_WANDB_RUN_ID"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted names a sweep and the CLI use for the same parameter."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


SUMMARY_MAX = ("val/sumr", "val/t2v_sumr", "val/MR-full-mAP", "val/R1@0.5+R1@0.7")
"""The selection metrics of the recipes (retrieval SumR, NRCCR's t2v SumR, the grounding mAP and R1 sums)."""


class RunWandbLogger(WandbLogger):
    """``WandbLogger`` whose files live in ``<save_dir>/<run id>`` (so sweep trials keep their own ``config.yaml``,
    ``test_metrics.json`` and predictions), and which tells W&B to summarise ``summary_max`` by their maximum (a
    sweep then optimises the best ``val/sumr`` of a run, not the last one).

    The run id is ``id``, else the sweep agent's ``WANDB_RUN_ID``, else a fresh one; DDP processes started by this one
    inherit it through ``LECCR_WANDB_RUN_ID``. ``close_run`` (called by the CLI when its command is done) finishes the
    W&B run, so the next run in the same process starts its own. Other arguments are ``WandbLogger``'s
    (``log_model=True`` uploads the best checkpoint as an artifact).
    """

    def __init__(
        self,
        save_dir: str = "runs/wandb",
        id: str | None = None,  # noqa: A002  (WandbLogger's own argument name)
        summary_max: tuple[str, ...] = SUMMARY_MAX,
        **kwargs: Any,
    ):
        inherited = os.environ.get(RUN_ID_VARIABLE)
        run_id = id or os.environ.get("WANDB_RUN_ID") or inherited or uuid.uuid4().hex[:8]
        self._owns_run_id_variable = inherited is None
        os.environ[RUN_ID_VARIABLE] = run_id
        folder = Path(save_dir) / run_id
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(save_dir=str(folder), id=run_id, **kwargs)
        self.summary_max = tuple(summary_max)

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(params)
        for name in self.summary_max:
            self.experiment.define_metric(name, summary="max")

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Put the resolved CLI config into the run config under its dotted names (optimiser arguments included)."""
        self.experiment.config.update(flatten(config), allow_val_change=True)

    def close_run(self) -> None:
        """Finish the W&B run (the offline files are complete after this) and release the shared run id."""
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish()
        if self._owns_run_id_variable:
            os.environ.pop(RUN_ID_VARIABLE, None)
