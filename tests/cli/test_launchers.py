"""Every way a researcher launches a multi-process run, on CPU with gloo, through the real ``leccr`` command in a
subprocess: ``--trainer.strategy ddp`` (Lightning re-runs the command per rank) for fit + test-after-fit + predict,
and torchrun with a 2-"node" rendezvous on 127.0.0.1. Each writes its files once and gives the 1-process metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from tests.helpers import REPO, cli_args, experiment

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

CPU_DDP = ("--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2")


def leccr(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m leccr_lightning <args>`` from the repository root; fails the test with its output on error."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, "-m", "leccr_lightning", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def only(folder: Path, name: str) -> Path:
    found = sorted(folder.rglob(name))
    assert len(found) == 1, f"expected one {name} under {folder}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    write_synthetic_collection(root, SynthConfig(n_train=64, n_val=15, n_test=17, seed=8))
    return root


@pytest.fixture(scope="module")
def ddp_run(collection, tmp_path_factory) -> Path:
    """``leccr fit --trainer.strategy ddp --trainer.devices 2 --test_after_fit true`` (2 epochs)."""
    out = tmp_path_factory.mktemp("ddp_fit")
    leccr(
        "fit",
        *cli_args(experiment("baseline"), collection, out, *CPU_DDP, "--trainer.max_epochs", "2"),
        "--test_after_fit",
        "true",
    )
    return out


def test_subprocess_ddp_fit_tests_once_with_the_one_process_numbers(ddp_run, collection, tmp_path):
    written = json.loads(only(ddp_run, "test_metrics.json").read_text(encoding="utf-8"))
    assert "test/sumr" in written
    best = only(ddp_run, "best-*.ckpt")
    leccr("test", *cli_args(experiment("baseline"), collection, tmp_path, "--ckpt_path", str(best)))
    single = json.loads(only(tmp_path, "test_metrics.json").read_text(encoding="utf-8"))
    assert single == pytest.approx(written, abs=1e-9)


def test_subprocess_ddp_predict_writes_every_query_once(ddp_run, collection, tmp_path):
    best = only(ddp_run, "best-*.ckpt")
    leccr("predict", *cli_args(experiment("baseline"), collection, tmp_path, *CPU_DDP, "--ckpt_path", str(best)))
    lines = only(tmp_path, "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    queries = (collection / "synthetic/TextData/synthtest_de.caption.txt").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["query_id"] for line in lines] == [q.split(" ", 1)[0] for q in queries]


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def test_torchrun_two_nodes_give_the_one_process_metrics(ddp_run, collection, tmp_path):
    best = only(ddp_run, "best-*.ckpt")
    args = cli_args(experiment("baseline"), collection, tmp_path / "nodes", "--ckpt_path", str(best))
    args += ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "1"]
    args += ["--trainer.num_nodes", "2"]
    rendezvous = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d"]
    rendezvous += ["--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "leccr-test"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "-m", "leccr_lightning", "test", *args]
    nodes = [
        subprocess.Popen(torchrun, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-4000:] for o in outputs)
    two_nodes = json.loads(only(tmp_path / "nodes", "test_metrics.json").read_text(encoding="utf-8"))
    leccr("test", *cli_args(experiment("baseline"), collection, tmp_path / "single", "--ckpt_path", str(best)))
    single = json.loads(only(tmp_path / "single", "test_metrics.json").read_text(encoding="utf-8"))
    assert two_nodes == pytest.approx(single, abs=1e-9)


def test_a_method_that_leaves_parameters_unused_gets_the_unused_parameter_search(collection, monkeypatch):
    from leccr_lightning.cli import lightning_main
    from leccr_lightning.methods.baseline import DualEncoderBaseline

    monkeypatch.setattr("sys.argv", ["leccr"])
    args = ["--config", experiment("baseline"), "--data.init_args.root", str(collection)]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn"]
    assert not lightning_main(args, run=False).trainer.strategy._ddp_kwargs.get("find_unused_parameters", False)
    monkeypatch.setattr(DualEncoderBaseline, "ddp_find_unused_parameters", True)
    assert lightning_main(args, run=False).trainer.strategy._ddp_kwargs["find_unused_parameters"] is True


@pytest.mark.parametrize("recipe", ["baseline/vatex_zh", "nrccr/multi30k_de", "leccr/mscoco_ja"])
def test_ddp_trainer_config_turns_on_cross_rank_negatives_in_the_local_form(recipe) -> None:
    from tests.helpers import dotted, resolved_config

    method, name = recipe.split("/")
    config = resolved_config(experiment(method, name), "--config", str(REPO / "configs/trainer/ddp.yaml"))
    assert dotted(config, "trainer.strategy") == "ddp" and dotted(config, "trainer.devices") == -1
    assert dotted(config, "model.init_args.gather_negatives") is True
    assert dotted(config, "model.init_args.local_loss") is True
    multinode = resolved_config(
        experiment(method, name),
        *("--config", str(REPO / "configs/trainer/ddp.yaml"), "--config", str(REPO / "configs/trainer/multinode.yaml")),
    )
    assert dotted(multinode, "trainer.num_nodes") == 2
