"""W&B sweeps: one per method, each well formed and over parameters its real recipe has (every parameter resolved
against the CLI parser, so a typo fails here); sweep-style offline runs keep one folder per run with its config, its
metrics and the resolved config in the W&B run config, and summarise the monitored metric by its maximum.

`wandb sweep` needs the server, so the agent's command is expanded here exactly as the agent does (``${env}``
dropped, ``${args}`` -> ``--key=value``).
"""

from __future__ import annotations

import pytest
import yaml

from leccr_lightning.callbacks.loggers import RunWandbLogger
from tests.helpers import REPO, dotted, experiment, resolved_config, written_test_metrics

SWEEPS = sorted((REPO / "experiments/sweeps").glob("*.yaml"))


def agent_args(sweep: dict, pick: int = 0) -> list[str]:
    """The ``--key=value`` arguments a W&B agent would pass for one point of the sweep (the ``pick``-th value, or a
    bound of a range)."""
    args = []
    for key, spec in sweep["parameters"].items():
        if "value" in spec:
            value = spec["value"]
        elif "values" in spec:
            value = spec["values"][pick % len(spec["values"])]
        else:
            value = spec["min"] if pick % 2 == 0 else spec["max"]
        args.append(f"--{key}={value}")
    return args


def as_number(value):
    """A number from YAML or the command line (PyYAML reads ``1e-05`` as a string), else the value itself."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def command_configs(sweep: dict) -> list[str]:
    command = sweep["command"]
    return [command[i + 1] for i, token in enumerate(command) if token == "--config"]


def test_every_method_with_a_paper_recipe_has_a_sweep() -> None:
    methods = {path.stem for path in SWEEPS}
    folders = {path.name for path in (REPO / "configs/experiments").iterdir() if path.is_dir()}
    assert folders - methods == set(), f"methods without experiments/sweeps/<method>.yaml: {sorted(folders - methods)}"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_is_well_formed_and_runs_a_real_recipe(path) -> None:
    sweep = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert sweep["method"] in ("grid", "random", "bayes") and sweep["metric"]["goal"] in ("minimize", "maximize")
    assert sweep["command"][:4] == ["${env}", "leccr", "fit", "--config"] and sweep["command"][-1] == "${args}"
    configs = command_configs(sweep)
    assert configs[0].startswith(f"configs/experiments/{path.stem}/") and "tiny" not in configs[0]
    assert all((REPO / config).is_file() for config in configs), configs
    assert sweep["parameters"]
    more = [arg for other in configs[1:] for arg in ("--config", str(REPO / other))]
    resolved = resolved_config(REPO / configs[0], *more)
    monitored = dotted(resolved, "trainer.callbacks.ModelCheckpoint.init_args.monitor")
    assert sweep["metric"]["name"] == monitored, "the sweep optimises what the recipe selects checkpoints on"
    assert monitored in dotted(resolved, "trainer.logger.init_args.summary_max"), "W&B summarises it by its maximum"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_parameter_is_an_argument_of_the_recipe(path) -> None:
    sweep = yaml.safe_load(path.read_text(encoding="utf-8"))
    args = agent_args(sweep)
    first, *others = command_configs(sweep)
    config = resolved_config(REPO / first, *[arg for other in others for arg in ("--config", str(REPO / other))], *args)
    for arg in args:
        key, value = arg[2:].split("=", 1)
        resolved = dotted(config, key)
        if isinstance(resolved, dict):  # a class-valued parameter (an objective): its class path
            resolved = resolved["class_path"]
        assert as_number(resolved) == pytest.approx(as_number(value)), key


def test_two_sweep_runs_keep_their_own_folders_configs_and_best_metric(synthetic_root, tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summaries, close_run = [], RunWandbLogger.close_run

    def record_then_close(logger: RunWandbLogger) -> None:
        summaries.append({"val/sumr": dict(logger.experiment.summary["val/sumr"]), "id": logger.experiment.id})
        close_run(logger)

    monkeypatch.setattr(RunWandbLogger, "close_run", record_then_close)
    sweep = yaml.safe_load((REPO / "experiments/sweeps/baseline.yaml").read_text(encoding="utf-8"))
    runs = []
    for pick in range(2):  # the learning rate of two sweep points (the tiny config has no triplet margin)
        extra = ["--config", str(REPO / "configs/logger/wandb.yaml"), agent_args(sweep, pick)[0]]
        extra += ["--trainer.logger.init_args.save_dir", str(tmp_path)]  # after the logger preset
        extra += ["--trainer.max_epochs", "2", "--test_after_fit", "true"]
        runs.append(run_cli("fit", experiment("baseline"), synthetic_root, tmp_path, *extra))
    folders = [cli.trainer.log_dir for cli in runs]
    assert len(set(folders)) == 2 and all(folder.startswith(str(tmp_path)) for folder in folders)
    assert [s["id"] for s in summaries] == [cli.trainer.logger.version for cli in runs] and len(set(folders)) == 2
    for pick, (cli, folder) in enumerate(zip(runs, folders, strict=True)):
        lr = float(agent_args(sweep, pick)[0].split("=", 1)[1])
        saved = yaml.safe_load((tmp_path / folder / "config.yaml").read_text(encoding="utf-8"))
        assert dotted(saved, "model.init_args.optimizer.init_args.lr") == pytest.approx(lr)
        assert "test/sumr" in written_test_metrics(folder)
        best = float(cli.trainer.checkpoint_callback.best_model_score)  # the checkpoint monitors val/sumr (max)
        assert summaries[pick]["val/sumr"]["max"] == pytest.approx(best, abs=1e-4)
        assert list((tmp_path / folder).glob("wandb/offline-run-*/run-*.wandb"))
