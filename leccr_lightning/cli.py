"""The ``leccr`` command: Lightning subcommands (fit, validate, test, predict) and data tools (synth, ...).

``leccr fit --config configs/experiments/baseline/tiny.yaml`` composes data, model and trainer through LightningCLI
(``class_path``/``init_args``, dotted overrides). Sizes shared by data and model (``visual_dim``, ``vocab_size``)
are linked from the instantiated DataModule when it has them, never interpolated (ecosystem P14).
``leccr test`` prints the metrics and writes them as a flat JSON dict ``test_metrics.json`` into the run's log
directory; ``fit --test_after_fit true`` tests the best checkpoint right after training. Model arguments come from the
configs on every subcommand (the checkpoint's hyper-parameters are not merged back: linked sizes are derived values).

Every method is importable by its class name (``--model NRCCR``); a method's optimiser and scheduler are its own
``optimizer:`` / ``scheduler:`` arguments (LightningCLI's ``--optimizer``/``--lr_scheduler`` are not offered, so
nothing silently replaces them). Under DDP, a method whose branches may stay unused on a step says so with
``ddp_find_unused_parameters = True`` and the CLI picks the matching strategy. Files are written once, by rank 0,
after every rank has agreed on the run folder.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import warnings
from collections.abc import Callable

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from leccr_lightning.callbacks.test_metrics import TestMetricsWriter
from leccr_lightning.tools import TOOL_ENTRY_POINTS, load_tool, tool_summary

DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, on every fit; nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def import_methods() -> None:
    """Import every module of ``leccr_lightning.methods``, so each method class is known by its short name."""
    import leccr_lightning.methods as methods

    for info in pkgutil.walk_packages(methods.__path__, f"{methods.__name__}."):
        importlib.import_module(info.name)


class LeccrSaveConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` into the run folder and puts the resolved config into the run config of every logger
    that takes one (``RunWandbLogger.log_config``: lr, weight decay, temperatures... under their dotted names)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        resolved = self.parser.dump(self.config, skip_none=False, format="json")
        for logger in trainer.loggers:
            if hasattr(logger, "log_config"):
                logger.log_config(json.loads(resolved))


def _link_if_present(attribute: str) -> Callable:
    """A link function that forwards ``data.<attribute>`` when the DataModule has it (else the model default)."""

    def forward(data: L.LightningDataModule):
        return getattr(data, attribute, None)

    return forward


class LeccrCLI(LightningCLI):
    """LightningCLI with data->model size links, a test-after-fit option and ``test_metrics.json``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.subcommand is not None:  # the command ran: close the loggers' runs (W&B) for the next one
            for logger in self.trainer.loggers:
                if hasattr(logger, "close_run"):
                    logger.close_run()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="after fit, test the best checkpoint and write test_metrics.json",
        )
        parser.link_arguments(
            "data",
            "model.init_args.visual_dim",
            compute_fn=_link_if_present("visual_dim"),
            apply_on="instantiate",
        )
        parser.link_arguments(
            "data",
            "model.init_args.vocab_size",
            compute_fn=_link_if_present("vocab_size"),
            apply_on="instantiate",
        )

    def _parse_ckpt_path(self) -> None:
        """Keep the model arguments of the given configs on ``--ckpt_path`` runs.

        LightningCLI would merge the checkpoint's recorded init arguments back into the config; those include the
        linked sizes, which are derived from the DataModule and may not apply to the chosen model class.
        """

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The trainer, with DDP's unused-parameter search switched on when the method asks for it."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        strategy = config["trainer"].get("strategy")
        if strategy in DDP_STRATEGIES and getattr(self.model, "ddp_find_unused_parameters", False):
            config["trainer"]["strategy"] = f"{strategy}_find_unused_parameters_true"
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(TestMetricsWriter())
        return trainer

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit"):
            has_best = bool(getattr(self.trainer.checkpoint_callback, "best_model_path", ""))
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


def lightning_main(args: list[str] | None = None, run: bool = True) -> LeccrCLI:
    """Run a Lightning subcommand; returns the CLI object (its trainer, model and datamodule) for callers and tests.

    ``run=False`` only instantiates the config's trainer, model and data (``args`` then hold no subcommand).
    """
    import_methods()
    return LeccrCLI(
        L.LightningModule,
        L.LightningDataModule,
        save_config_callback=LeccrSaveConfigCallback,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        auto_configure_optimizers=False,
    )


LIGHTNING_SUBCOMMANDS = {
    "fit": "train a method from --config files (LightningCLI); --test_after_fit true also tests the best checkpoint",
    "validate": "evaluate a model or --ckpt_path on the validation split",
    "test": "evaluate a model or --ckpt_path on the test split and write test_metrics.json",
    "predict": "write the top-k gallery ids and scores of every test query (predictions.jsonl)",
}


def usage() -> str:
    """The ``leccr --help`` text: every Lightning subcommand and tool with a one-line description."""
    width = max(map(len, [*LIGHTNING_SUBCOMMANDS, *TOOL_ENTRY_POINTS]))
    lines = ["usage: leccr <command> [options]   (leccr <command> --help for its options)", "", "training:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in LIGHTNING_SUBCOMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {name:<{width}}  {tool_summary(name)}" for name in TOOL_ENTRY_POINTS]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``leccr`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        if not argv:
            raise SystemExit(2)
    elif argv[0] in TOOL_ENTRY_POINTS:
        load_tool(argv[0])(argv[1:])
    else:
        lightning_main(None if args is None else argv)


if __name__ == "__main__":
    main()
