"""The ``leccr`` command: Lightning subcommands (fit, validate, test, predict) and data tools (synth, ...).

``leccr fit --config configs/experiments/baseline/tiny.yaml`` composes data, model and trainer through LightningCLI
(``class_path``/``init_args``, dotted overrides). Sizes shared by data and model (``visual_dim``, ``vocab_size``)
are linked from the instantiated DataModule when it has them, never interpolated (ecosystem P14).
``leccr test`` prints the metrics and writes them as a flat JSON dict ``test_metrics.json`` into the run's log
directory; ``fit --test_after_fit true`` tests the best checkpoint right after training. Model arguments come from the
configs on every subcommand (the checkpoint's hyper-parameters are not merged back: linked sizes are derived values).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from leccr_lightning.tools import TOOL_ENTRY_POINTS, load_tool, tool_summary


def _link_if_present(attribute: str) -> Callable:
    """A link function that forwards ``data.<attribute>`` when the DataModule has it (else the model default)."""

    def forward(data: L.LightningDataModule):
        return getattr(data, attribute, None)

    return forward


class LeccrCLI(LightningCLI):
    """LightningCLI with data->model size links, a test-after-fit option and ``test_metrics.json``."""

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

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit"):
            has_best = bool(getattr(self.trainer.checkpoint_callback, "best_model_path", ""))
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)
            self.after_test()

    def after_test(self) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")}
        if self.trainer.global_rank != 0:
            return
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        print(f"test metrics ({out_dir / 'test_metrics.json'}):")
        for key in sorted(metrics):
            print(f"  {key:<24} {metrics[key]:.4f}")


def lightning_main(args: list[str] | None = None) -> LeccrCLI:
    """Run a Lightning subcommand; returns the CLI object (its trainer, model and datamodule) for callers and tests."""
    return LeccrCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
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
        lightning_main(argv)


if __name__ == "__main__":
    main()
