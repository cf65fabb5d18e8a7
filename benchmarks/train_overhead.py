"""Training-step overhead of ``leccr fit`` (LightningModule + Trainer) against a bare PyTorch loop.

For each method, a synthetic collection is written with ``leccr synth`` and the method's tiny experiment config is
instantiated through ``LeccrCLI`` exactly as ``leccr fit`` does (validation and checkpointing switched off, since
they are not per-step costs; the config's logger and logging interval kept). Lightning trains ``--warmup`` +
``--steps`` steps; then the bare loop runs the same number of steps over the same model, DataLoader and optimiser
(``configure_optimizers``): move the batch to the device, the method's loss, ``backward``, gradient clipping when
the run clips, ``step``, ``zero_grad``. Time per step = median interval between consecutive step ends after the
warm-up (data loading included in both). The pair is repeated ``--repeats`` times with fresh objects and the median
of the paired ratios is printed with the goal.

Methods are named by their experiment config, so moving a method's module only changes its config; the only
method-specific code here is the loss call of the bare loop (``METHODS``).

    python benchmarks/train_overhead.py --methods baseline,moment_detr --steps 40 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from _common import add_device_options, goal_line, paired_ratio, setup_device, synchronize
from lightning.fabric.utilities.apply_func import move_data_to_device

from leccr_lightning.cli import LeccrCLI
from leccr_lightning.cli import main as leccr_main
from leccr_lightning.data.grounding.saliency import draw_training_targets

REPO = Path(__file__).resolve().parents[1]
LossOfBatch = Callable[[L.LightningModule, dict, L.LightningDataModule], torch.Tensor]


def grounding_loss(model: L.LightningModule, batch: dict, data: L.LightningDataModule) -> torch.Tensor:
    """The DETR loss of a batch after the DataModule's per-epoch target draws (its ``on_before_batch_transfer`` in
    ``leccr fit``), so the bare loop pays for them too."""
    batch = draw_training_targets(batch, data.sampling_seed, 0, data.hparams.max_windows)
    return model.compute_losses(batch, model(batch))["loss"]


METHODS: dict[str, tuple[str, str, LossOfBatch]] = {
    "baseline": (
        "configs/experiments/baseline/tiny.yaml",
        "retrieval",
        lambda model, batch, data: model.compute_losses(batch)["loss"],
    ),
    "moment_detr": (
        "configs/experiments/moment_detr/tiny.yaml",
        "grounding",
        grounding_loss,
    ),
}
"""name -> (experiment config, ``leccr synth --task``, the training loss of a batch as the method computes it)."""
RATIO_GOAL = 1.10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="baseline,moment_detr", help=f"comma-separated, from {sorted(METHODS)}")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the timing")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="Lightning / bare pairs")
    add_device_options(parser)
    parser.set_defaults(threads=1)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # LeccrCLI gets its arguments from instantiate(), not from this command line
    for logger in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    unknown = [name for name in args.methods.split(",") if name not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    return args


class StepClock(L.Callback):
    """``time.perf_counter()`` at the end of every training step (after the GPU finished it)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        synchronize(pl_module.device)
        self.ends.append(time.perf_counter())


def step_seconds(ends: list[float], warmup: int) -> float:
    """Median interval between consecutive step ends after ``warmup`` steps."""
    return statistics.median(b - a for a, b in zip(ends[warmup:], ends[warmup + 1 :], strict=False))


def instantiate(config: str, root: str, out: str, device: torch.device, total_steps: int) -> LeccrCLI:
    """The method, DataModule and Trainer of ``leccr fit --config config`` (not run), for ``total_steps`` steps."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    args = [
        "--config", str(REPO / config), "--data.init_args.root", root, "--trainer.accelerator", accelerator,
        "--trainer.devices", "1", "--trainer.max_steps", str(total_steps), "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks", "[]",
        "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", out,
        "--trainer.logger.init_args.save_dir", out,
    ]  # fmt: skip
    return LeccrCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=False,
        parser_kwargs={"parser_mode": "omegaconf"},
    )


def lightning_run(cli: LeccrCLI, warmup: int) -> float:
    """Seconds per step of ``trainer.fit`` as ``leccr fit`` runs it."""
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return step_seconds(clock.ends, warmup)


def bare_run(cli: LeccrCLI, loss_of_batch: LossOfBatch, total_steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step of a plain loop over the same model, DataLoader and optimiser."""
    model = cli.model.to(device).train()
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    clip = getattr(model, "gradient_clip_norm", None) or cli.trainer.gradient_clip_val
    ends: list[float] = []
    while len(ends) < total_steps:
        for batch in cli.datamodule.train_dataloader():
            loss = loss_of_batch(model, move_data_to_device(batch, device), cli.datamodule)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad()
            synchronize(device)
            ends.append(time.perf_counter())
            if len(ends) == total_steps:
                break
    return step_seconds(ends, warmup)


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # the tiny configs train deterministically
    total = args.warmup + args.steps + 1
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            config, task, loss_of_batch = METHODS[name]
            root = str(Path(tmp) / name / "data")
            with contextlib.redirect_stdout(io.StringIO()):
                leccr_main(["synth", "--out", root, "--task", task])
            lightning_times, bare_times = [], []
            for repeat in range(args.repeats):
                out = str(Path(tmp) / name / f"run{repeat}")
                lightning_times.append(lightning_run(instantiate(config, root, out, device, total), args.warmup))
                cli = instantiate(config, root, out, device, total)
                cli.datamodule.setup("fit")
                bare_times.append(bare_run(cli, loss_of_batch, total, args.warmup, device))
            print(
                f"{name} ({config}): leccr fit {1e3 * statistics.median(lightning_times):.2f} ms/step, "
                f"bare loop {1e3 * statistics.median(bare_times):.2f} ms/step ({args.steps} steps after "
                f"{args.warmup} warm-up, {args.repeats} pairs)"
            )
            ratio = paired_ratio(lightning_times, bare_times)
            print("  " + goal_line(f"{name} leccr fit / bare loop (paired median)", ratio, RATIO_GOAL))


if __name__ == "__main__":
    main()
