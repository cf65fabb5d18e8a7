"""W&B sweep definitions: well formed, and the command the agent would run trains and logs the sweep metric.

`wandb sweep` needs the server, so this expands `command` exactly as the agent does (``${env}`` dropped,
``${args}`` -> ``--key=value``) and runs it in-process with W&B offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leccr_lightning.cli import lightning_main

SWEEPS = sorted(Path("experiments/sweeps").glob("*.yaml"))


def agent_argv(sweep: dict) -> list[str]:
    """The argv a W&B agent would build from one point of the sweep (first value, or the lower bound)."""
    args = []
    for key, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
        args.append(f"--{key}={value}")
    argv = []
    for token in sweep["command"]:
        if token == "${env}":
            continue
        argv.extend(args if token == "${args}" else [token])
    return argv


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_is_well_formed(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"]["goal"] in ("minimize", "maximize")
    assert "${args}" in sweep["command"]
    assert sweep["parameters"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_agent_command_trains_and_logs_the_sweep_metric(path, synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = yaml.safe_load(path.read_text())
    argv = agent_argv(sweep)
    assert argv[:2] == ["leccr", "fit"]
    cli = lightning_main(
        argv[1:]
        + [
            "--data.init_args.root",
            str(synthetic_root),
            "--trainer.max_epochs",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert sweep["metric"]["name"] in cli.trainer.callback_metrics
    for key, spec in sweep["parameters"].items():
        node = cli.config["fit"]
        for part in key.split("."):
            node = node[part]
        assert node == pytest.approx(spec["values"][0] if "values" in spec else spec["min"])
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
