"""Every alignment objective on every retrieval method (both found by discovery): one training step where the method
provides what the objective reads, a construction-time error naming the missing context otherwise."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch

import leccr_lightning.methods.objectives as objectives_package
from leccr_lightning.methods.objectives import PairObjective
from leccr_lightning.tools.synth import collection_for_experiment, write_for_experiment
from tests.helpers import instantiate, retrieval_tiny_configs


def discovered_objectives() -> list[type[PairObjective]]:
    for info in pkgutil.iter_modules(objectives_package.__path__):
        importlib.import_module(f"{objectives_package.__name__}.{info.name}")
    found, pending = set(), list(PairObjective.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and not cls.__name__.startswith("_"):
            found.add(cls)
    return sorted(found, key=lambda cls: cls.__name__)


OBJECTIVES = discovered_objectives()
CONFIGS = retrieval_tiny_configs()


def test_discovery_finds_the_known_families() -> None:
    names = {cls.__name__ for cls in OBJECTIVES}
    assert {"InfoNCEObjective", "TripletObjective", "SelHNObjective", "DCOTObjective", "ListwiseObjective"} <= names
    methods = {path.parent.name for path in CONFIGS}
    assert {"baseline", "nrccr", "cl2cm", "dcot", "leccr", "rvsepp", "rivrl"} <= methods


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """config -> (model, one training batch) on a small collection of the kind the config reads, built once."""
    cache, roots = {}, {}

    def build(config: Path):
        if config not in cache:
            task, _, implied = collection_for_experiment(config)
            key = (task, tuple(sorted((k, str(v)) for k, v in implied.items())))
            if key not in roots:
                roots[key] = tmp_path_factory.mktemp("objectives")
                # the English video collection at its default size: rivrl/tiny's concept_dim is its mined tag count
                sizes = {} if implied.get("layout") == "synthvideo" else {"n_train": 24, "n_val": 6, "n_test": 6}
                write_for_experiment(config, roots[key], seed=3, **sizes)
            model, data = instantiate(config, roots[key], "--data.init_args.batch_size", "8")
            data.setup("fit")
            cache[config] = (model, next(iter(data.train_dataloader())))
        return cache[config]

    return build


@pytest.mark.parametrize("objective_class", OBJECTIVES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.parent.name)
def test_objective_trains_one_step_or_is_refused(config: Path, objective_class: type[PairObjective], built) -> None:
    model, batch = built(config)
    objective = objective_class()
    missing = objective.reads - model.provided_context()
    if missing:
        with pytest.raises(ValueError, match="does not provide"):
            model.attach_objective(objective)
        return
    torch.manual_seed(0)
    original = model.objective
    try:
        model.objective = model.attach_objective(objective)
        model.train()
        losses = model.compute_losses(batch)
        assert torch.isfinite(losses["loss"]), losses
        model.zero_grad()
        losses["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    finally:
        model.objective = original
