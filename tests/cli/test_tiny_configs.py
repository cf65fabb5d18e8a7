"""Every tiny experiment stays tiny and offline: resolved, it names no pretrained text or CLIP model (a preset at
paper scale pulled in by a tiny config would need mBERT, which no test machine has) and says how to write its data."""

from __future__ import annotations

import pytest

from tests.helpers import EXPERIMENTS, resolved_config

TINY_CONFIGS = sorted(EXPERIMENTS.glob("*/tiny*.yaml"))
OFFLINE_MODELS = {"text_model": ("tiny", "gru"), "clip_model": ("tiny",)}


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_tiny_config_names_no_pretrained_model(config) -> None:
    init_args = resolved_config(config)["model"]["init_args"]
    for key, allowed in OFFLINE_MODELS.items():
        if init_args.get(key) is not None:
            assert init_args[key] in allowed, f"{config.name}: model.init_args.{key} = {init_args[key]!r}"


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_tiny_config_says_how_to_write_its_data(config) -> None:
    relative = config.relative_to(EXPERIMENTS.parent.parent)
    assert f"leccr synth --config {relative}" in config.read_text(encoding="utf-8")
